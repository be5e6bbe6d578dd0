"""``raw_catalogue_sensor``: start a catalogue refresh when the raw metadata files change.

Each tick fingerprints the metadata files the ``xmarket`` resource selects (see
``fingerprint.py``) and compares it with the cursor. On a change it asks for one build job
run tagged ``catret/refresh=true``, the tag that ``dagster.yaml``'s run queue limits to one run at
a time, so a refresh never overlaps another (runs wait in the queue instead). Every asset reuses
what did not change, so the refresh is the ordinary build job.
"""

from __future__ import annotations

import dagster as dg

from catret_pipeline.config import BUILD_JOB, REFRESH_TAG
from catret_pipeline.ingest.resources import XMarketSource
from catret_pipeline.refresh.fingerprint import Cursor, compare, fingerprint_files

DIGEST_TAG = "catret/raw_digest"


def evaluate(context: dg.SensorEvaluationContext, xmarket: XMarketSource) -> dg.SensorResult:
    """One tick: a run request when the fingerprint differs from the cursor, else a skip."""
    cursor = Cursor.loads(context.cursor)
    try:
        root = xmarket.root_path
        files = xmarket.metadata_files()
        fp = fingerprint_files(root, files, cursor.files)
    except (OSError, ValueError) as exc:
        # A missing root or a file that vanished mid-tick: try again next tick, keep the cursor.
        return dg.SensorResult(skip_reason=f"raw catalogue not readable: {exc}")
    change = compare(cursor.files, fp.files)
    digest = fp.digest
    if cursor.digest == digest:
        # Same bytes; remember new mtimes (a re-copied download) so they are not hashed again.
        new_cursor = Cursor(fp.files, digest, cursor.requests)
        reason = f"raw catalogue unchanged ({len(fp.files)} files, digest {digest[:12]})"
        if change.touched:
            reason += f"; {change.summary()}"
        return dg.SensorResult(skip_reason=reason, cursor=new_cursor.dumps())
    first = cursor.digest is None
    what = f"first fingerprint of {len(fp.files)} files" if first else change.summary()
    context.log.info(f"raw catalogue changed: {what}; requesting a refresh")
    # The sequence number makes a return to an earlier catalogue (A -> B -> A) a new run key,
    # while a tick retried after a lost cursor update repeats the key and is deduplicated.
    request = dg.RunRequest(
        run_key=f"{digest}:{cursor.requests + 1}",
        tags={REFRESH_TAG: "true", DIGEST_TAG: digest[:16]},
    )
    new_cursor = Cursor(fp.files, digest, cursor.requests + 1)
    return dg.SensorResult(run_requests=[request], cursor=new_cursor.dumps())


def build_raw_catalogue_sensor(interval_s: int) -> dg.SensorDefinition:
    """The sensor, ticking every ``interval_s`` seconds (``CatretConfig.refresh_sensor_interval``)."""

    @dg.sensor(
        job_name=BUILD_JOB,
        name="raw_catalogue_sensor",
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Requests a {BUILD_JOB} refresh run (tag {REFRESH_TAG}=true) when a raw metadata "
            "file is added, removed or its bytes change (size/mtime, then SHA-256)."
        ),
    )
    def raw_catalogue_sensor(
        context: dg.SensorEvaluationContext, xmarket: XMarketSource
    ) -> dg.SensorResult:
        return evaluate(context, xmarket)

    return raw_catalogue_sensor
