"""Study code outside the library: the rules of one-time studies that scripts/ run, which no stage, table or notebook
of the pipeline needs (it uses ``vaccine_lib`` like any user, never the other way round)."""
