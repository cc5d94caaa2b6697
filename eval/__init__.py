"""BEIR-style evaluation: data loading (`eval.beir`), TREC runs (`eval.trec`),
metrics through pytrec_eval (`eval.metrics`) and tables (`eval.report`)."""
