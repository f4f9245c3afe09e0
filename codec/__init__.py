"""codec: the codecs, each joining a model to the bitstream (array -> model -> symbols -> entropy
layer -> container -> bytes, and back): ``pcz/`` and ``split/`` (packages), ``nerv``. Beside them,
one idea each: ``io/`` (image and video files), ``eval/`` (quality metrics), ``serve/`` (the split
codec's HTTP service), ``train/`` (training entry points), ``cli/`` (command-line tools, thin shells
over these), ``modelfile`` (model files) and ``cpu`` (CPU thread defaults)."""
