"""models: likelihoods, conditionals, latents and reconstructions; never file formats."""
