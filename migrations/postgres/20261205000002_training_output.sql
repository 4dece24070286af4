-- The folder a training writes (its spec's output), unique among the trainings still queued or
-- running: of two submissions naming one output, whatever their timing, one is refused.
ALTER TABLE jobs ADD COLUMN output TEXT;
UPDATE jobs SET output = CAST(spec AS JSON) -> 'spec' ->> 'output' WHERE kind = 'training';
-- Queued or running duplicates accepted before this index existed: the earliest keeps the name.
UPDATE jobs SET output = NULL
WHERE kind = 'training' AND status IN ('queued', 'running')
  AND EXISTS (SELECT 1 FROM jobs earlier
              WHERE earlier.kind = 'training' AND earlier.status IN ('queued', 'running')
                AND earlier.output = jobs.output AND earlier.id < jobs.id);
CREATE UNIQUE INDEX jobs_training_output ON jobs (output)
    WHERE kind = 'training' AND status IN ('queued', 'running');
