-- 0008_prefect.sql: how far a run was reported to Prefect (docs/orchestration.md). NULL when
-- Prefect is not configured or the run was reported in full; else "not reported: <why>" (no
-- flow run: the run id is the engine's own UUID v7) or "incomplete: reporting stopped at <call>:
-- <why> (...)" (the flow run exists but lacks states, task runs or logs from that point).
ALTER TABLE audit.system_run ADD COLUMN prefect_report text;
