-- Evaluations with sampling: each instance's reliable change across its sampled outputs,
-- written with the final report (q-values are adjusted across every instance).
ALTER TABLE instances ADD COLUMN verdict TEXT;
ALTER TABLE instances ADD COLUMN q_value DOUBLE PRECISION;
CREATE INDEX instances_verdict ON instances (job_id, verdict, idx);
