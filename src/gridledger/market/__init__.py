"""Commercial layer: offers and bids, matching, the DSO's certificate, remuneration, settlement."""
