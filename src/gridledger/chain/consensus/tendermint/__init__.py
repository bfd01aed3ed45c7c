"""Tendermint BFT consensus (Buchman, Kwon, Milosevic, arXiv 1807.04938, Algorithm 1).

The state machine (:mod:`.state`) is pure: it consumes proposals, votes and timeouts and emits
actions through an environment, so it runs the same under a simulated network in tests and under
the asyncio reactor (:mod:`.reactor`) in a validator process.
"""
