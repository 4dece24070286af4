-- The headline of a finished evaluation (n, verdict, nfr and its interval, both accuracies),
-- kept beside the report so that listings read a few hundred bytes instead of every report.
ALTER TABLE jobs ADD COLUMN summary TEXT;

UPDATE jobs SET summary = json_object(
    'n', json_extract(report, '$.n'),
    'verdict', CASE
        WHEN coalesce(json_array_length(report, '$.gate.checks'), 0) = 0 THEN 'none'
        WHEN json_extract(report, '$.gate.passed') THEN 'pass'
        ELSE 'fail' END,
    'nfr', json_extract(report, '$.metrics.nfr'),
    'nfr_interval', json(coalesce(json_extract(report, '$.intervals.nfr'), 'null')),
    'accuracy_old', json_extract(report, '$.old.accuracy'),
    'accuracy_new', json_extract(report, '$.new.accuracy'))
WHERE kind = 'evaluation' AND report IS NOT NULL;
