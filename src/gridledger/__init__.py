"""gridledger: a permissioned energy blockchain for network-aware energy trading in microgrids."""

__version__ = "0.1.0"
