"""Networks of the bundles: reusable blocks in ``custom_networks.blocks``, one network a file in ``custom_networks.nets``."""
