"""retention and incremental integrity (issue 19)

- `integrity_pending`: every ledger transaction, noted by a trigger as it is inserted, until the
  periodic integrity check has verified it. A transaction that commits late (a lower id committed
  after a higher one) is still pending when it becomes visible, so nothing slips behind the
  checkpoint, which an id high-water mark could not promise.
- `integrity_account_marks`: each account's balance as last verified; the periodic check proves
  `balance = mark + the pending entries` for every account, so a balance moved without an entry is
  found without summing the whole ledger. Seeded from the ledger's sums, so a balance already out
  of line with its entries shows at the first check.
- `follower_history` becomes partitioned by month on `fetched_at`: it is append-only, nothing
  references it, and dropping a month is cheap and leaves no bloat. Its key becomes
  (id, fetched_at), as a partitioned table's key must hold the partition key. A DEFAULT
  partition takes any row outside the months that exist, so an insert never fails.
- Partition maintenance needs the table's owner: two SECURITY DEFINER functions owned by the
  migration's role do it, narrowly (one table, months only, nothing younger than 7 days dropped);
  the application role only EXECUTEs them.
- Indexes for retention's deletes by age (job runs, finished deliveries).

Revision ID: 0011
Revises: 0008
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADD_PARTITIONS = """
CREATE FUNCTION follower_history_add_partitions(months_back integer, months_ahead integer)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
-- Create the monthly partitions from `months_back` months ago to `months_ahead` months on; rows
-- that a missing month left in the DEFAULT partition move into their new partition. Returns how
-- many partitions were created.
DECLARE
  lo timestamp;  -- UTC wall clock: month arithmetic independent of the session's time zone
  part text;
  made integer := 0;
BEGIN
  IF months_back IS NULL OR months_ahead IS NULL OR months_back NOT BETWEEN 0 AND 24
     OR months_ahead NOT BETWEEN 0 AND 24 THEN
    RAISE EXCEPTION 'months_back and months_ahead must be between 0 and 24, got % and %',
      months_back, months_ahead;
  END IF;
  FOR i IN -months_back..months_ahead LOOP
    lo := date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i);
    part := 'follower_history_' || to_char(lo, 'YYYYMM');
    CONTINUE WHEN to_regclass(part) IS NOT NULL;
    EXECUTE format('CREATE TABLE %I (LIKE follower_history INCLUDING DEFAULTS)', part);
    EXECUTE format(
      'WITH moved AS (DELETE FROM follower_history_default'
      ' WHERE fetched_at >= %L AND fetched_at < %L RETURNING *)'
      ' INSERT INTO %I SELECT * FROM moved',
      lo AT TIME ZONE 'UTC', (lo + interval '1 month') AT TIME ZONE 'UTC', part);
    EXECUTE format(
      'ALTER TABLE follower_history ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
      part, lo AT TIME ZONE 'UTC', (lo + interval '1 month') AT TIME ZONE 'UTC');
    made := made + 1;
  END LOOP;
  RETURN made;
END $$;
"""

DROP_PARTITIONS = """
CREATE FUNCTION follower_history_drop_partitions(before timestamptz)
RETURNS SETOF text LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
-- Drop every monthly partition whose whole range ends at or before `before`, which must be at
-- least 7 days ago (the newest history is never dropped this way). Returns the names dropped.
DECLARE
  p record;
BEGIN
  IF before IS NULL OR before > now() - interval '7 days' THEN
    RAISE EXCEPTION 'before must be at least 7 days ago, got %', before;
  END IF;
  FOR p IN
    SELECT c.relname AS name
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'follower_history'::regclass
      -- (CASE: the month is read only from a name that has one, whatever the order of tests)
      AND CASE WHEN c.relname ~ '^follower_history_[0-9]{6}$'
               THEN (to_date(substr(c.relname, 18), 'YYYYMM') + interval '1 month')
                    AT TIME ZONE 'UTC' <= before
               ELSE false END
    ORDER BY c.relname
  LOOP
    EXECUTE format('DROP TABLE %I', p.name);
    RETURN NEXT p.name;
  END LOOP;
END $$;
"""


def upgrade() -> None:
    # -- incremental integrity ---------------------------------------------------------------------
    op.execute(
        """
        CREATE TABLE integrity_pending (
            transaction_id bigint PRIMARY KEY
        );
        CREATE FUNCTION integrity_note_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO integrity_pending (transaction_id) VALUES (NEW.id);
          RETURN NULL;
        END $$;
        CREATE TRIGGER ledger_transactions_integrity_pending
          AFTER INSERT ON ledger_transactions
          FOR EACH ROW EXECUTE FUNCTION integrity_note_transaction();
        CREATE TABLE integrity_account_marks (
            account_id bigint PRIMARY KEY
                CONSTRAINT fk_integrity_account_marks_account_id_accounts REFERENCES accounts (id),
            balance numeric(24, 6) NOT NULL
        );
        INSERT INTO integrity_account_marks (account_id, balance)
        SELECT account_id, sum(amount) FROM ledger_entries GROUP BY account_id;
        """
    )
    # -- follower history, partitioned by month ------------------------------------------------
    op.execute(
        """
        ALTER TABLE follower_history RENAME TO follower_history_unpartitioned;
        ALTER TABLE follower_history_unpartitioned
          RENAME CONSTRAINT pk_follower_history TO pk_follower_history_unpartitioned;
        ALTER INDEX ix_follower_history_handle_fetched
          RENAME TO ix_follower_history_unpartitioned_handle_fetched;
        CREATE TABLE follower_history (
            id bigint NOT NULL DEFAULT nextval('follower_history_id_seq'),
            handle varchar(32) NOT NULL,
            followers bigint NOT NULL,
            fetched_at timestamptz NOT NULL,
            CONSTRAINT pk_follower_history PRIMARY KEY (id, fetched_at)
        ) PARTITION BY RANGE (fetched_at);
        CREATE INDEX ix_follower_history_handle_fetched ON follower_history (handle, fetched_at);
        CREATE TABLE follower_history_default PARTITION OF follower_history DEFAULT;
        ALTER SEQUENCE follower_history_id_seq OWNED BY follower_history.id;
        """
    )
    op.execute(ADD_PARTITIONS)
    op.execute(DROP_PARTITIONS)
    # Only roles granted EXECUTE (the application's) may call them.
    op.execute(
        "REVOKE ALL ON FUNCTION follower_history_add_partitions(integer, integer) FROM PUBLIC"
    )
    op.execute("REVOKE ALL ON FUNCTION follower_history_drop_partitions(timestamptz) FROM PUBLIC")
    op.execute(
        """
        INSERT INTO follower_history (id, handle, followers, fetched_at)
        SELECT id, handle, followers, fetched_at FROM follower_history_unpartitioned;
        -- The months the existing rows need (up to two years back) and the next two.
        SELECT follower_history_add_partitions(
          coalesce((SELECT least(24, (extract(year FROM age(now(), min(fetched_at))) * 12
                                      + extract(month FROM age(now(), min(fetched_at))))::int + 1)
                    FROM follower_history_unpartitioned HAVING count(*) > 0), 0),
          2);
        DROP TABLE follower_history_unpartitioned;
        """
    )
    # -- retention's deletes by age ------------------------------------------------------------
    op.create_index("ix_job_runs_started_at", "job_runs", ["started_at"])
    op.create_index(
        "ix_alert_deliveries_finished_at",
        "alert_deliveries",
        ["finished_at"],
        postgresql_where="finished_at IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_index("ix_alert_deliveries_finished_at", table_name="alert_deliveries")
    op.drop_index("ix_job_runs_started_at", table_name="job_runs")
    op.execute(
        """
        CREATE TABLE follower_history_unpartitioned (
            id bigint NOT NULL DEFAULT nextval('follower_history_id_seq'),
            handle varchar(32) NOT NULL,
            followers bigint NOT NULL,
            fetched_at timestamptz NOT NULL
        );
        INSERT INTO follower_history_unpartitioned SELECT id, handle, followers, fetched_at
        FROM follower_history;
        ALTER SEQUENCE follower_history_id_seq OWNED BY follower_history_unpartitioned.id;
        DROP TABLE follower_history;
        ALTER TABLE follower_history_unpartitioned RENAME TO follower_history;
        ALTER TABLE follower_history ADD CONSTRAINT pk_follower_history PRIMARY KEY (id);
        CREATE INDEX ix_follower_history_handle_fetched ON follower_history (handle, fetched_at);
        DROP FUNCTION follower_history_drop_partitions(timestamptz);
        DROP FUNCTION follower_history_add_partitions(integer, integer);
        DROP TABLE integrity_account_marks;
        DROP TRIGGER ledger_transactions_integrity_pending ON ledger_transactions;
        DROP FUNCTION integrity_note_transaction();
        DROP TABLE integrity_pending;
        """
    )
