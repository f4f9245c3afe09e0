"""codec: one module per codec joining a model to the bitstream (array -> model -> symbols ->
entropy layer -> container -> bytes, and back). Command-line tools are thin shells over these."""
