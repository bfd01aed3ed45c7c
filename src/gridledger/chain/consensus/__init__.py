"""Consensus engines that drive a :class:`gridledger.chain.abci.Application`."""
