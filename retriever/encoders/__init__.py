"""Encoders: text to query and document representations, behind one protocol.

- ``encode_queries(texts)`` -> one representation per query (a dense row, a sparse vector, term
  weights), in input order;
- ``encode_documents(texts, progress=False)`` -> one per document, where a model encodes them
  (a query-only encoder, e.g. ``TokenWeightQueryEncoder``, has none);
- ``config()`` -> everything that changes the outputs, recorded in the index manifest.

Model families that are trained have one ``nn.Module`` (``base.EncoderModel``) that trains and
encodes: ``dense.DenseModel`` and ``splade.SpladeModel``. ``DenseEncoder`` and
``SpladeEncoder`` wrap them for inference; ``training.encoders`` subclasses them for training.
"""
