-- 0010_bronze_id_conversion.sql: the conversion of bronze collections written before dp-engine
-- 0.2, whose _id was the key hash as a binary UUID, to the text form (32 lowercase hex digits),
-- by `dp-engine migrate --bronze-ids` (docs/storage.md#bronze-ids-from-before-02). One row per
-- attempt on a collection: an attempt that stopped (crash, server gone) stays 'running' or
-- 'failed', and the next attempt goes on from where it was (documents copied already are kept).
CREATE TABLE audit.bronze_id_conversion (
  id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  database_name     text        NOT NULL,  -- the MongoDB database (DP_BRONZE_DB)
  collection        text        NOT NULL,
  status            text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
  started_at        timestamptz NOT NULL DEFAULT now(),
  ended_at          timestamptz,
  documents_before  bigint,     -- documents in the collection when the attempt began
  binary_before     bigint,     -- of them with a binary _id
  copied            bigint,     -- copies with the text _id written by this attempt
  already_copied    bigint,     -- copies found from an earlier attempt
  removed           bigint,     -- documents with a binary _id removed at the end
  documents_after   bigint,     -- documents in the collection at the end
  error             text
);
CREATE INDEX bronze_id_conversion_collection ON audit.bronze_id_conversion (database_name, collection, started_at);
