"""`gridledger demo`: the energy market end to end on an embedded chain (see docs/demo.md)."""
