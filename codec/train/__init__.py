"""Training entry points for the models codecs ship: pcz's circuits from images
(:mod:`codec.train.pcz`; used by ``pcz train`` and ``tools/train_pcz_models.py``)."""
