"""Networks, one file per family: what goes in and what comes out, nothing about training.

Every network maps L scaled to [-1, 1], shape (B, 1, H, W), to ab scaled by 1/110, shape
(B, 2, H, W) (see util/colour.py). Each module offers:

    Config                a frozen dataclass of its architecture settings (models/config.py): the
                          command line is generated from it, checkpoints save it, and on test or
                          resume the checkpoint's values are forced back
    SMOKE                 settings of a tiny version, for the tests that train every family
    build(cfg)            the network, from its Config
    size_multiple(cfg)    image sizes must be a multiple of this
    example_inputs(cfg, L)  optional: what forward takes in training, for a batch L (default: L
                          alone); runs/memory.py runs it on the meta device to estimate memory
"""
