-- The headline of a finished evaluation (n, verdict, nfr and its interval, both accuracies),
-- kept beside the report so that listings read a few hundred bytes instead of every report.
ALTER TABLE jobs ADD COLUMN summary TEXT;

UPDATE jobs SET summary = json_build_object(
    'n', (report::jsonb -> 'n'),
    'verdict', CASE
        WHEN coalesce(jsonb_array_length(report::jsonb -> 'gate' -> 'checks'), 0) = 0 THEN 'none'
        WHEN (report::jsonb -> 'gate' ->> 'passed')::boolean THEN 'pass'
        ELSE 'fail' END,
    'nfr', (report::jsonb -> 'metrics' -> 'nfr'),
    'nfr_interval', coalesce(report::jsonb -> 'intervals' -> 'nfr', 'null'::jsonb),
    'accuracy_old', (report::jsonb -> 'old' -> 'accuracy'),
    'accuracy_new', (report::jsonb -> 'new' -> 'accuracy'))::text
WHERE kind = 'evaluation' AND report IS NOT NULL;
