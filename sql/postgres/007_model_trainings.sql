-- Every training and its decision (champion / challenger): the candidate
-- version, the champion it was scored against on the same held-out days,
-- both sets of metrics, and whether it was promoted and why. Written once
-- per training id by the training workflow's last step (and by
-- `intraday train` on a stopped store). Applied on every migrate, so every
-- statement is idempotent.
CREATE TABLE IF NOT EXISTS model_trainings (
    training_id        text PRIMARY KEY,
    trigger            text NOT NULL CHECK (trigger IN ('schedule', 'request', 'cli')),
    requested_by       text NOT NULL,
    requested_at       timestamptz NOT NULL,
    finished_at        timestamptz NOT NULL DEFAULT now(),
    data_start         timestamptz NOT NULL,
    data_end           timestamptz NOT NULL,
    devices            integer NOT NULL,
    candidate_version  text NOT NULL,
    champion_version   text NOT NULL,  -- what was served; 'baseline' (the seasonal fallback) when no model was
    promoted           boolean NOT NULL,
    forced             boolean NOT NULL DEFAULT false,
    reason             text NOT NULL,
    evaluation         jsonb NOT NULL,  -- evaluation.Evaluation.to_dict(): origins, both models' scores
    trace_id           text
);
CREATE INDEX IF NOT EXISTS model_trainings_finished ON model_trainings (finished_at DESC);
