"""Where the service keeps things: the database (its records, its repositories) and the files.

`records` (plain data, and the one `JobState`), `database` (the one writer,
transactions, migrations), a repository per table (`videos`, `jobs`,
`uploads`, `outbox`) opened together as `tables`, the status `cache`,
`storage` (the layout of data_dir, sinks, atomic moves, the quarantine), `disk`
(free space, reserved before it is written) and `backup` (the database replicated by a
supervised Litestream, and restored from it). What a commit did is told to the
database's listeners as plain data (`records.Commit`): the store announces
nothing itself.

May import: aio, errors.
"""
