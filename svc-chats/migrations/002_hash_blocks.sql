-- 002_hash_blocks: per-block range-hash aggregates of messages, so that GetRangeHash reads a few
-- hundred block rows plus two short edges of messages instead of every message of the range
-- (see docs/ARCHITECTURE.md, svc-chats, "Range hashes"). Every statement is idempotent (IF NOT
-- EXISTS, OR REPLACE, and a backfill that rebuilds the table) so a half-applied run can be re-run.

-- The levels. A block of level |bits| holds the messages of one chat with
-- message_id >> bits = blk, i.e. ids [blk << bits, (blk + 1) << bits). Snowflake ids are
-- (ms since 2024-01-01) << 22 | site+instance << 12 | seq, so the blocks span
--   bits 42: 2^20 ms (~17.5 min)   47: 2^25 ms (~9.3 h)   52: 2^30 ms (~12.4 days)
-- A factor of 32 between levels: a range reads the top-level blocks it covers, at most 2 x 31
-- blocks of each lower level, and raw messages of less than two lowest-level blocks (~35 min)
-- at its ends. A message that is its chat's only one in a write updates one row per level, so
-- few levels keep writes cheap; raw messages are cheap to read (an index-only scan), so the
-- lowest level can be coarse (docs/ARCHITECTURE.md). Must equal hashblocks_bits[] in
-- svc-chats/hashblocks.c (the reader's decomposition); changing them needs a migration that
-- rebuilds the table.
CREATE OR REPLACE FUNCTION message_hash_block_bits() RETURNS SMALLINT[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '{42,47,52}'::SMALLINT[] $$;

CREATE TABLE IF NOT EXISTS message_hash_blocks (
    chat_id BIGINT   NOT NULL,
    bits    SMALLINT NOT NULL,   -- the level (one of message_hash_block_bits())
    blk     BIGINT   NOT NULL,   -- message_id >> bits
    n       BIGINT   NOT NULL,   -- messages in the block, tombstones included
    x       BIGINT   NOT NULL,   -- XOR of their h
    PRIMARY KEY (chat_id, bits, blk)
) WITH (fillfactor = 70);        -- room for HOT updates: recent blocks are rewritten by every batch

-- Writes. Statement-level AFTER triggers with transition tables (one call per statement, not
-- per row) turn a statement's rows into per-block deltas (n, x) and stash them in a temp table
-- of the session; one deferred constraint trigger applies the transaction's deltas at COMMIT as
-- a single upsert sorted by key. Applying per statement instead would lock block rows in two
-- sorted sweeps for an INSERT ... ON CONFLICT DO UPDATE (PostgreSQL fires its UPDATE trigger,
-- with the updated rows, and then its INSERT trigger, with the inserted rows), and two such
-- writers deadlocked in a psql test (an edit plus a new message in one chat against a new
-- message in the same chat). Here each transaction takes its block locks in one sorted sweep,
-- held only during its COMMIT.

-- At COMMIT (or at the end of the statement under SET CONSTRAINTS ... IMMEDIATE).
CREATE OR REPLACE FUNCTION message_hash_blocks_flush() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_hash_blocks AS b (chat_id, bits, blk, n, x)
        SELECT chat_id, bits, blk, sum(n), bit_xor(x) FROM pg_temp.message_hash_deltas
        GROUP BY chat_id, bits, blk HAVING sum(n) <> 0 OR bit_xor(x) <> 0
        ORDER BY chat_id, bits, blk
        ON CONFLICT (chat_id, bits, blk) DO UPDATE SET n = b.n + EXCLUDED.n, x = b.x # EXCLUDED.x;
    -- blocks emptied by deletes (n = 0 leaves x = 0 when the table is right)
    DELETE FROM message_hash_blocks b USING
        (SELECT DISTINCT chat_id, bits, blk FROM pg_temp.message_hash_deltas WHERE n < 0) d
        WHERE b.chat_id = d.chat_id AND b.bits = d.bits AND b.blk = d.blk AND b.n = 0;
    DELETE FROM pg_temp.message_hash_deltas;
    DELETE FROM pg_temp.message_hash_flush;
    RETURN NULL;
END $$;

-- After each INSERT, UPDATE or DELETE statement on messages.
CREATE OR REPLACE FUNCTION message_hash_blocks_stash() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.message_hash_deltas') IS NULL THEN
        CREATE TEMP TABLE message_hash_deltas (chat_id BIGINT, bits SMALLINT, blk BIGINT,
                                               n BIGINT, x BIGINT) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE message_hash_flush (pending BOOLEAN PRIMARY KEY) ON COMMIT DELETE ROWS;
        CREATE CONSTRAINT TRIGGER message_hash_flush AFTER INSERT ON pg_temp.message_hash_flush
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION message_hash_blocks_flush();
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pg_temp.message_hash_deltas
            SELECT m.chat_id, l.bits, m.message_id >> l.bits, count(*), bit_xor(m.h)
            FROM new_rows m CROSS JOIN unnest(message_hash_block_bits()) AS l(bits)
            GROUP BY 1, 2, 3;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO pg_temp.message_hash_deltas
            SELECT m.chat_id, l.bits, m.message_id >> l.bits, -count(*), bit_xor(m.h)
            FROM old_rows m CROSS JOIN unnest(message_hash_block_bits()) AS l(bits)
            GROUP BY 1, 2, 3;
    ELSE
        -- UPDATE: the old states leave their blocks and the new ones enter theirs; for the usual
        -- update (same key) that is n unchanged, x ^= old.h ^ new.h, and nothing when h is equal
        INSERT INTO pg_temp.message_hash_deltas
            SELECT m.chat_id, l.bits, m.message_id >> l.bits, sum(m.d), bit_xor(m.h)
            FROM (SELECT chat_id, message_id, h, 1 AS d FROM new_rows
                  UNION ALL SELECT chat_id, message_id, h, -1 FROM old_rows) m
            CROSS JOIN unnest(message_hash_block_bits()) AS l(bits)
            GROUP BY 1, 2, 3 HAVING sum(m.d) <> 0 OR bit_xor(m.h) <> 0;
    END IF;
    INSERT INTO pg_temp.message_hash_flush VALUES (true) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

-- Rebuilds every block from messages (the backfill below; also the repair after writes that
-- bypassed the triggers, e.g. session_replication_role = replica). Blocks writers meanwhile.
CREATE OR REPLACE FUNCTION message_hash_blocks_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE;
    TRUNCATE message_hash_blocks;
    IF to_regclass('pg_temp.message_hash_deltas') IS NOT NULL THEN
        DELETE FROM pg_temp.message_hash_deltas;   -- already counted by the rebuild
    END IF;
    INSERT INTO message_hash_blocks (chat_id, bits, blk, n, x)
        SELECT m.chat_id, l.bits, m.message_id >> l.bits, count(*), bit_xor(m.h)
        FROM messages m CROSS JOIN unnest(message_hash_block_bits()) AS l(bits)
        GROUP BY 1, 2, 3;
END $$;

-- TRUNCATE messages empties the blocks and drops the transaction's pending deltas.
CREATE OR REPLACE FUNCTION message_hash_blocks_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE message_hash_blocks;
    IF to_regclass('pg_temp.message_hash_deltas') IS NOT NULL THEN
        DELETE FROM pg_temp.message_hash_deltas;
    END IF;
    RETURN NULL;
END $$;

-- Transition tables allow one event per trigger, hence three. The backfill runs after the
-- triggers exist, in the same transaction, under the lock that keeps writers out.
LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE;
CREATE OR REPLACE TRIGGER message_hash_blocks_insert AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION message_hash_blocks_stash();
CREATE OR REPLACE TRIGGER message_hash_blocks_update AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION message_hash_blocks_stash();
CREATE OR REPLACE TRIGGER message_hash_blocks_delete AFTER DELETE ON messages
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION message_hash_blocks_stash();
CREATE OR REPLACE TRIGGER message_hash_blocks_truncate AFTER TRUNCATE ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION message_hash_blocks_truncate();
SELECT message_hash_blocks_rebuild();
