"""Device strings resolved in one place: ``auto`` means cuda when present, else cpu."""

from __future__ import annotations

import logging

log = logging.getLogger("retriever")
_logged: set[str] = set()


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU")
    if device not in _logged:
        _logged.add(device)
        log.info("using device %s", device)
    return device
