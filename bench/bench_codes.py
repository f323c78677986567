"""Cost of the code primitives at the default argon2id profile (19 MiB, t=2, p=1).

Baseline: one argon2id hash, measured in the same run. A check should cost
about one hash; generating and hashing 5 codes about five.
"""

from __future__ import annotations

from bench.common import markdown_table, median_ms
from domain.codes import CodeHasher, generate_codes


def run() -> list[dict[str, object]]:
    hasher = CodeHasher()
    code = generate_codes(1)[0].value
    stored = hasher.hash(code)
    one_hash = median_ms(lambda: hasher.hash(code))
    check_hit = median_ms(lambda: hasher.verify(stored, code))
    check_miss = median_ms(lambda: hasher.verify_nothing(code))
    five = median_ms(lambda: hasher.hash_all(generate_codes(5)), repeat=7)
    return [
        {"measure": "one argon2id hash (baseline)", "ms": one_hash, "ratio": 1.0},
        {"measure": "check a right code", "ms": check_hit, "ratio": check_hit / one_hash},
        {"measure": "check an unknown code", "ms": check_miss, "ratio": check_miss / one_hash},
        {"measure": "generate + hash 5 codes", "ms": five, "ratio": five / one_hash},
    ]


if __name__ == "__main__":
    print(markdown_table(run()))
