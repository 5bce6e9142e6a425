#!/usr/bin/env python3
"""An independent RFC 6962 reference: MTH, PATH(m, D[n]) and PROOF(m, D[n]) written straight
from section 2.1 of the RFC over Python lists, for checking the Rust implementation.

Entries are the 32-byte SHA-256 of b"report-<i>" (what the archive logs: report digests).
Prints JSON: {"<n>": {"root": hex, "paths": {"<m>": [hex...]}, "proofs": {"<m>": [hex...]}}}.
Usage: rfc6962_ref.py N [N ...]
"""
import hashlib
import json
import sys


def h(b):
    return hashlib.sha256(b).digest()


def k_of(n):
    # The largest power of two smaller than n.
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d):
    n = len(d)
    if n == 0:
        return h(b"")
    if n == 1:
        return h(b"\x00" + d[0])
    k = k_of(n)
    return h(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m, d):
    n = len(d)
    if n == 1:
        return []
    k = k_of(n)
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m, d, b):
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = k_of(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def proof(m, d):
    return subproof(m, d, True)


def main():
    out = {}
    for arg in sys.argv[1:]:
        n = int(arg)
        d = [h(b"report-%d" % i) for i in range(n)]
        out[str(n)] = {
            "root": mth(d).hex(),
            "paths": {str(m): [x.hex() for x in path(m, d)] for m in range(n)},
            "proofs": {str(m): [x.hex() for x in proof(m, d)] for m in range(1, n)},
        }
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
