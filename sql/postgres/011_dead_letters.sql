-- Messages a subscriber could not take: its handler refused them (DROP:
-- malformed, or a batch that can never be stored) or failed until the
-- sidecar's delivery retries ran out. The sidecar then publishes the
-- message, as it came, on the `dead-letter` topic (GCP Pub/Sub also after
-- its own delivery attempts), and the gateway keeps it here, where an
-- operator sees it (`intraday status`, GET /dead-letters, the
-- DeadLetters alert) and can send it again. One row per message id and
-- topic: a dead letter delivered twice is one row. Applied on every
-- migrate, so every statement is idempotent.
CREATE TABLE IF NOT EXISTS dead_letters (
    message_id   text NOT NULL,     -- the CloudEvent id of the original message
    topic        text NOT NULL,     -- the topic it was published on
    source       text,              -- the app that published it
    received_at  timestamptz NOT NULL DEFAULT now(),
    event        jsonb NOT NULL,    -- the whole CloudEvent, data included
    replayed_at  timestamptz,       -- when an operator sent it again on its topic
    PRIMARY KEY (topic, message_id)
);
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_at DESC);
