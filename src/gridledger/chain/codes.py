"""Result codes of check_tx and of executed transactions (0 = OK), shared by all contracts."""

OK = 0
MALFORMED = 1  # not a canonical, well-formed transaction
BAD_SIGNATURE = 2
WRONG_CHAIN = 3
BAD_SEQUENCE = 4  # replayed, skipped or out-of-order per-sender sequence number
NOT_MEMBER = 5
ROLE_NOT_ALLOWED = 6
UNKNOWN_TYPE = 7
INVALID_PAYLOAD = 8
INSUFFICIENT_FUNDS = 9
NOT_FOUND = 10
ALREADY_EXISTS = 11
UNAUTHORIZED = 12  # e.g. a meter reading signed by a key that is not that meter's
TOO_LARGE = 13
DUPLICATE = 14  # the same transaction is already pending or committed
MEMBER_INACTIVE = 15  # suspended or revoked
MEMPOOL_FULL = 16
LIMIT_REACHED = 17  # a per-member limit is reached (e.g. the market's cap on open orders)
INTERNAL = 99

NAMES = {v: k for k, v in dict(globals()).items() if k.isupper() and isinstance(v, int)}
