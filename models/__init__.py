"""Networks, one file per family: what goes in and what comes out, nothing about training.

Every network maps L scaled to [-1, 1], shape (B, 1, H, W), to ab scaled by 1/110, shape
(B, 2, H, W) (see colorize_data.py). Each module offers:

    add_args(parser)      the family's own architecture flags (shown in --help)
    build(args)           the network, from parsed (or checkpoint-saved) arguments
    size_multiple(args)   image sizes must be a multiple of this
    example_inputs(args, L)  optional: what forward takes in training, for a batch L (default: L
                          alone); trainers/memory.py runs it on the meta device to estimate memory
"""
