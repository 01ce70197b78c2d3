"""The inventory engine: the only code that touches stock and reservation keys.

Every change is one Redis WATCH/MULTI/EXEC transaction with a bounded, jittered
retry (a product decision: no Lua). All keys of one product share the hash tag
`{p:<id>}`, so each transaction touches a single hash slot and runs on Redis Cluster.

Keys of product P (prefix `fc:{p:P}:`):
  sale        hash: status (live|ended|closed), limit, stripes, opens_at, closes_at,
              total (MongoDB's stock level the units count: a restock adds only what
              it lacks, so a rebuild racing it counts no unit twice)
  stock:<i>   available units, striped over `stripes` keys: concurrent reservations
              WATCH one stripe each, so they rarely collide on the same key
  user:<u>    units user u holds or bought (the per-user limit); `buyers` lists them
  sold        units claimed by orders
  hold:<rid>  hash: user, quantity, expires_at (a live reservation)
  deadlines   sorted set: reservation id -> expires_at (finds expired holds)
  claimed     hash: reservation id -> order id, for claims whose order is not yet
              confirmed in MongoDB (the sweeper settles them after a crash)
  restored    set of cancelled order ids whose units came back (restore exactly once)
  expired:<rid>  the user of a hold that expired and went back on sale (for a day), so
              a late checkout is told "expired", not "unknown"
  acked       a mark written before WAIT on a Redis Cluster (REDIS_ACK_REPLICAS): the
              replicas that have it have the reservation before it; a minute's TTL

Invariant while a sale is live: total = sum(stock:*) + held + sold.

Modules: `keys` (the layout above), `errors` (what a refusal says), `records` (the
values read and written), `hints` (what a process remembers between requests),
`transactions` (the retry loop), `sale_state` (a sale's lifecycle) and `inventory`
(reservations, claims, releases and restores: the `Inventory` callers use).
"""
