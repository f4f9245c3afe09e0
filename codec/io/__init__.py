"""io: reading and writing the arrays the codecs take, kept apart from the codecs themselves.

:mod:`.images` reads images (PNG and what Pillow reads, MNIST idx files) and writes PNG; :mod:`.video`
reads and writes clips through PyAV or as folders of PNG frames. Every reader checks declared sizes
before it allocates and names the file in its errors.
"""
