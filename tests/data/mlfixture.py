"""A small hand-written ml-100k-format dataset.

Expected values (worked by hand, see the comments in `ml_fixture`):
- user 1: 21 ratings → 2 test, 2 valid, 17 train; user 2: 10 → 1, 1, 8; user 3: 9 → 0, 0, 9;
  user 4 has no ratings. Totals: train 34, valid 3, test 3.
"""

from __future__ import annotations

import pathlib

ITEMS = """\
1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0
2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0
3|Four Rooms (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0
4|Old Film (1939)|01-Jan-1939||http://x|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0
5|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0
6|No Genre (1998)|05-Mar-1998||http://x|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0
"""

USERS = """\
1|24|M|technician|85711
2|53|F|other|94043
3|17|M|writer|T8H1N
4|60|X|astronaut|
"""

# user 3, hand-worked: sorted by (time, file order) the items are 3,1,2,4,6,5,3,1,2 with ratings
# 1,3,5,4,4,2,4,5,2 (the two ties at t=100 and t=300 keep file order).
USER3 = [(3, 2, 5, 100), (3, 1, 3, 50), (3, 4, 4, 100), (3, 3, 1, 10), (3, 5, 2, 200), (3, 6, 4, 150),
         (3, 1, 5, 300), (3, 2, 2, 300), (3, 3, 4, 250)]
# user 2: distinct times; sorted: t=400..1000; test = (item 4, t=1000, r=5), valid = (item 2, t=900, r=4).
USER2 = [(2, 1, 4, 500), (2, 2, 1, 400), (2, 3, 5, 600), (2, 4, 3, 450), (2, 5, 4, 700), (2, 6, 2, 650),
         (2, 1, 5, 800), (2, 2, 4, 900), (2, 3, 3, 850), (2, 4, 5, 1000)]
# user 1: row i (i = 0..20) has time 1000 + (7 i mod 21) ∈ {1000, 1007, 1014}: three 7-row tie groups, so
# order is i = 0,3,..,18, 1,4,..,19, 2,5,..,20; test = i 17, 20; valid = i 11, 14.
USER1 = [(1, i % 6 + 1, i % 5 + 1, 1000 + (7 * i) % 21) for i in range(21)]


def ratings_rows() -> list[tuple[int, int, int, int]]:
  """USER1/2/3 interleaved (file order matters for ties only within a user)."""
  rows, rest = [], USER2 + USER3
  for i, r in enumerate(USER1):
    rows.append(r)
    if i < len(rest):
      rows.append(rest[i])
  rows.extend(rest[len(USER1):])
  return rows


def write_ml(folder: pathlib.Path, rows=None, items: str = ITEMS, users: str = USERS) -> pathlib.Path:
  folder.mkdir(parents=True, exist_ok=True)
  rows = ratings_rows() if rows is None else rows
  (folder / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
  (folder / "u.item").write_text(items, encoding="latin-1")
  (folder / "u.user").write_text(users)
  return folder
