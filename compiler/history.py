"""How the workflow spreads a plan over Temporal histories, shared so estimates match what runs.

A map with more items than `MAP_INLINE_LIMIT` whose template holds no approval gate runs in child
workflows of `MAP_CHUNK_SIZE` items each, so no single history grows with the item count.
"""

from __future__ import annotations

MAP_INLINE_LIMIT = 200
MAP_CHUNK_SIZE = 500
HISTORY_EVENT_LIMIT = 50_000
