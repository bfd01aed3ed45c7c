"""Off-chain actors that use a node only through its API client: DSO, prosumer, smart meter."""
