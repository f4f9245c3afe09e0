"""Serving codecs over the network: the split codec's HTTP prediction service and its client
(:mod:`codec.serve.split`)."""
