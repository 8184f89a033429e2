"""Ways of training (one module each: regression, gan, vae, colorful, diffusion) over a small base
(base.py: the loop and its hooks), with what the loop needs: checkpoints, evaluation, the moving
average, the optimizers, distributed training. The families that combine a network with a way of
training are listed in registry.py."""
