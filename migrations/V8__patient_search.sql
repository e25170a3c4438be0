-- Patient search matches the start of the first name, the last name or the email. With an index
-- on each, SQLite answers it from three index ranges (MULTI-INDEX OR) instead of reading every
-- patient (measured in the benchmark: p99 64 ms at 20,000 patients before, see the README).
CREATE INDEX patient_by_first_name ON patient (first_name COLLATE NOCASE);
