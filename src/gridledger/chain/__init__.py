"""ICT layer: keys, transactions, blocks, Merkle trees, state store, contracts, consensus."""
