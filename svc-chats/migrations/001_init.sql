-- 001_init: the materialized view of chat.events (see docs/ARCHITECTURE.md, svc-chats).
-- Every statement is idempotent (IF NOT EXISTS) so a half-applied run can be re-run.

CREATE TABLE IF NOT EXISTS chats (
    chat_id        BIGINT   PRIMARY KEY,          -- Snowflake, never 0
    kind           SMALLINT NOT NULL,             -- chat.v1.ChatKind
    title          TEXT     NOT NULL DEFAULT '',
    creator_id     TEXT     NOT NULL,
    created_at_ms  BIGINT   NOT NULL,
    member_count   INTEGER  NOT NULL DEFAULT 0,   -- kept by the materializer
    request_key    TEXT,                          -- creator || ' ' || request_id (CreateChat retries)
    direct_key     TEXT                           -- 'a b' (sorted user ids) for direct chats
);
CREATE INDEX IF NOT EXISTS chats_request_key ON chats (request_key) WHERE request_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS chats_direct_key ON chats (direct_key) WHERE direct_key IS NOT NULL;

-- Membership is last-writer-wins per (chat, user) on (changed_at_ms, changed_event_id);
-- removed members keep their row (is_member = false) so an older add cannot revive them.
CREATE TABLE IF NOT EXISTS chat_members (
    chat_id          BIGINT  NOT NULL,
    user_id          TEXT    NOT NULL,
    is_member        BOOLEAN NOT NULL,
    changed_at_ms    BIGINT  NOT NULL,   -- produced_at_ms of the deciding event
    changed_event_id BIGINT  NOT NULL,   -- its event_id (tie-break)
    PRIMARY KEY (chat_id, user_id)
);
-- ListChats and PullMessages: the caller's current chats in chat_id order.
CREATE INDEX IF NOT EXISTS chat_members_by_user ON chat_members (user_id, chat_id) WHERE is_member;

-- One row per message (tombstones included). h is the range-hash term of the row's current
-- (message_id, version, deleted), as a signed BIGINT with the same 64 bits.
CREATE TABLE IF NOT EXISTS messages (
    chat_id           BIGINT  NOT NULL,
    message_id        BIGINT  NOT NULL,
    sender_id         TEXT    NOT NULL,
    client_message_id TEXT    NOT NULL DEFAULT '',
    body              TEXT    NOT NULL,
    created_at_ms     BIGINT  NOT NULL,
    updated_at_ms     BIGINT  NOT NULL,
    version           INTEGER NOT NULL,
    deleted           BOOLEAN NOT NULL,
    h                 BIGINT  NOT NULL,
    -- GetHistory, ListChats' newest id, PullMessages per chat and GetRangeHash are all range
    -- scans of this index; h is included so range hashes are index-only scans.
    PRIMARY KEY (chat_id, message_id) INCLUDE (h)
);

-- The consumed position of every chat.events partition, written in the same transaction
-- as the rows it produced.
CREATE TABLE IF NOT EXISTS kafka_offsets (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT  NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- PullMessages: the acknowledged position per (user, device).
CREATE TABLE IF NOT EXISTS pull_positions (
    user_id          TEXT   NOT NULL,
    device_id        TEXT   NOT NULL,
    after_message_id BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
