"""The continuous-training pipeline: select span -> resolve the baseline -> ingest -> validate ->
train -> evaluate -> infra-validate -> rollout.

One baseline per run: resolve_baseline reads the registry once (the serving version, the
statistics drift compares against) and load_baseline hands it to every later task as artifacts;
no other task reads the registry, and only rollout writes to it (the pushed version, the span's
statistics), replacing only the version resolved here.

Gates stop work. Compiled for a cluster (``conditions=True``, what ``ctloop compile`` writes),
train and evaluate run only when the data is valid, infra_validate only when the model is
blessed, rollout only when it is infra-blessed (``dsl.If`` on the gate tasks' boolean outputs).
kfp.local cannot run ``dsl.If``, so local runs use ``conditions=False``: the same tasks get the
gate values as inputs and skip their work when a gate failed, saying why in their log and in
their outputs' metadata (``skipped``), and rollout, checking every gate itself, records why
nothing was pushed. Compiled, a task after a failed gate does not run at all; the gate task's
own report says why.

Every run, blocked too, ends with its page (run_report, HTML the KFP UI shows). A task outside a
condition cannot take outputs from inside it, so compiled, one report task per way a run ends runs:
in each gate's ``dsl.Else`` branch, and after rollout. Locally one at the end takes every artifact.
"""

import contextlib
from typing import Dict, List, Optional

from kfp import dsl, kubernetes

from ctloop import contract
from ctloop.components.evaluate.component import evaluate
from ctloop.components.ingest.component import ingest
from ctloop.components.load_baseline.component import load_baseline
from ctloop.components.notify_failure.component import notify_failure
from ctloop.components.resolve_baseline.component import resolve_baseline
from ctloop.components.run_report.component import run_report
from ctloop.components.select_span.component import select_span
from ctloop.components.train.component import train
from ctloop.components.train_job.component import train_job
from ctloop.components.validate_data.component import validate_data
from ctloop.notify import OUTCOMES, SECRET_NAME, SMTP_PORT
from ctloop.pipelines import notify as notifications
from ctloop.pipelines.distributed import WorkerSettings, multi_worker_train
from ctloop.pipelines.gpu import GpuSettings, schedule_train
from ctloop.pipelines.release import RELEASE, release_step
from ctloop.pipelines.tune import TUNING, tune_step
from ctloop.registry.base import PRODUCTION, STAGING
from ctloop.settings import (
    EVAL_PERCENT,
    MODEL_NAME,
    SERVING_TARGET,
    SLO,
    SPANS,
    STATS_SAMPLE_RATE,
    CanarySLO,
    DriftThresholds,
    Fairness,
    Hyperparameters,
    KServe,
    Policy,
    Release,
    Thresholds,
    Tune,
    or_no_threshold,
)

PIPELINE_NAME = "ctloop-continuous-training"
# The components the pipeline is made of, in the order it runs them: compiled one by one too, as
# reusable component YAMLs (`ctloop compile`).
COMPONENTS = (select_span, resolve_baseline, load_baseline, ingest, validate_data, *TUNING, train,
              train_job, evaluate, *RELEASE, run_report, notify_failure)


def build(gpu: Optional[GpuSettings] = None, conditions: bool = True,
          tune_fan_out: int = Tune.cluster_parallelism, workers: Optional[WorkerSettings] = None):
    """The CT pipeline; with ``gpu``, its GPU variant (same graph and parameters; the train task
    on the GPU image, requesting ``gpu_count`` accelerators on nodes ``gpu`` selects).

    ``conditions``: tasks after a failed gate do not run (``dsl.If``), as compiled for a
    cluster; False: they run and skip their work themselves, for kfp.local, which cannot run
    ``dsl.If``. ``tune_fan_out``: trial tasks at once in the search's ParallelFor (a constant).
    ``workers``: the train step as a multi-worker TFJob (``train_job``), on a cluster.
    """

    def gate(passed, name: str):
        """Inside: the tasks that run only when ``passed`` (a gate task's bool output)."""
        if not conditions:
            return contextlib.nullcontext()
        return dsl.If(passed == True, name=name)  # noqa: E712 - KFP compiles ==, not truth

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Continuous training: TFDV-validated data, TF training, TFMA blessing "
        "against the serving model, infra validation in the serving runtime, canary rollout "
        "(local server or KServe).",
    )
    def ct_pipeline(
        data_uri: str,
        label: str,
        registry_uri: str,
        model_name: str = MODEL_NAME,
        exclude: List[str] = [],  # noqa: B006 - a KFP default value, never mutated
        task: str = contract.BINARY,
        positive_label: str = "",
        eval_percent: int = EVAL_PERCENT,
        spans: int = SPANS,
        s3_endpoint_url: str = "",
        storage_secret: str = "mlpipeline-minio-artifact",
        schema_uri: str = "",
        drift_threshold: float = DriftThresholds.drift,
        skew_threshold: float = DriftThresholds.skew,
        false_alarm_rate: float = DriftThresholds.false_alarm_rate,
        anomaly_policy: Dict[str, str] = {},  # noqa: B006 - a KFP default value, never mutated
        stats_sample_rate: float = STATS_SAMPLE_RATE,
        epochs: int = Hyperparameters.epochs,
        batch_size: int = Hyperparameters.batch_size,
        learning_rate: float = Hyperparameters.learning_rate,
        hidden_units: List[int] = list(Hyperparameters.hidden_units),  # noqa: B006, B008
        early_stopping_patience: int = Hyperparameters.early_stopping_patience,
        user_module: str = "",
        warm_start: bool = False,
        seed: int = Hyperparameters.seed,
        tune_trials: int = Tune.trials,
        tune_timeout_s: float = Tune.timeout_s,
        tune_parallelism: int = Tune.parallelism,
        tune_space: Dict[str, dict] = {},  # noqa: B006 - a KFP default value, never mutated
        tune_validation_percent: int = Tune.validation_percent,
        min_auc: float = or_no_threshold(Thresholds.min_auc),
        max_auc_decrease: float = or_no_threshold(Thresholds.max_auc_decrease),
        min_accuracy: float = or_no_threshold(Thresholds.min_accuracy),
        max_accuracy_decrease: float = or_no_threshold(Thresholds.max_accuracy_decrease),
        max_mae: float = or_no_threshold(Thresholds.max_mae),
        max_mae_increase: float = or_no_threshold(Thresholds.max_mae_increase),
        slice_features: List[str] = [],  # noqa: B006 - a KFP default value, never mutated
        sensitive_features: List[str] = [],  # noqa: B006 - a KFP default value, never mutated
        train_on_sensitive_features: bool = Fairness.train_on_sensitive_features,
        max_fpr_gap: float = or_no_threshold(Fairness.max_fpr_gap),
        max_tpr_gap: float = or_no_threshold(Fairness.max_tpr_gap),
        max_fairness_gap_increase: float = or_no_threshold(Fairness.max_fairness_gap_increase),
        min_group_size: int = Fairness.min_group_size,
        cold_start: str = Policy.cold_start,
        force_bless_reason: str = Policy.force_bless_reason or "",
        serving_python: str = "",
        max_p99_ms: float = SLO.max_p99_ms,
        min_rps: float = SLO.min_rps,
        infra_startup_timeout_s: float = SLO.startup_timeout_s,
        serving_target: str = SERVING_TARGET,
        serving_url: str = "",
        canary_percent: int = CanarySLO.percent,
        release_stage: str = STAGING,
        release_strategy: str = Release.strategy,
        shadow_min_agreement: float = Release.min_agreement,
        baseline_stage: str = PRODUCTION,
        kserve_namespace: str = KServe.namespace,
        kserve_mode: str = KServe.mode,
        kserve_service_account: str = KServe.service_account,
        serving_image: str = "",
        serving_record_uri: str = KServe.record_uri,
        # A string: KFP's driver reads the accelerator count with GetStringValue()
        # (backend/src/v2/driver/resolve.go), which is "" for a number, and no GPU is requested.
        gpu_count: str = "1" if gpu else "0",
        accelerator_type: str = "nvidia.com/gpu",
        mixed_precision: bool = False,
        beam_pipeline_args: List[str] = [],  # noqa: B006 - a KFP default value, never mutated
        notify_email_to: List[str] = [],  # noqa: B006 - a KFP default value, never mutated
        notify_email_from: str = "",
        notify_smtp_host: str = "",
        notify_smtp_port: int = SMTP_PORT,
        notify_smtp_starttls: bool = True,
        notify_on: List[str] = list(OUTCOMES),  # noqa: B006, B008 - a KFP default value
        notify_secret: str = SECRET_NAME,
    ):
        """One continuous-training iteration on the latest span(s) of ``data_uri``.

        Pipeline parameters have concrete defaults (no None): kfp 2.13's local runner cannot pass a
        None pipeline parameter, by default or explicitly. Each default is ``ctloop.settings``'
        (one definition for the pipeline, the CLI and the components).

        Args:
            data_uri: A pattern with ``{SPAN}`` (optionally ``{VERSION}``) placeholders and ``*``
                globs, e.g. ``data/span-{SPAN}/*.csv``; or a CSV/Parquet file, a folder of them, or
                a folder of ``span-<N>/`` folders. Local, gs:// or s3://.
            label: The label column.
            registry_uri: The model registry root (versions + serving pointer): a local folder, or
                ``s3://BUCKET/PREFIX`` on a cluster, where every task of every run must see it.
            model_name: The model's name in the registry (a DNS-1123 label).
            exclude: Columns that are not features.
            task: ``binary`` (a 2-valued label), ``multiclass`` (one of several classes) or
                ``regression`` (a number): the head, the loss and the metric that blesses.
            positive_label: Binary: the label value that is the positive class (empty: the
                second of the two values in sorted order, e.g. 1 of 0/1, "yes" of no/yes).
            eval_percent: Share of rows in the eval split, in percent.
            spans: How many of the latest spans to read and concatenate (a rolling range).
            s3_endpoint_url: An S3-compatible endpoint for s3:// data and registry (MinIO,
                SeaweedFS); empty: boto3's default. Credentials come from boto3's standard chain
                only.
            storage_secret: On a cluster: the Kubernetes Secret (keys ``accesskey``, ``secretkey``,
                as KFP's own ``mlpipeline-minio-artifact``) whose values the tasks that read data or
                the registry get as ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``. Unused
                locally.
            schema_uri: A curated TFDV schema that wins over the serving model's and inference
                (empty: none).
            drift_threshold: Smallest Jensen-Shannon divergence of a feature from the previous
                span (on its bins) that is drift, once significant.
            skew_threshold: Smallest Jensen-Shannon divergence between train and eval that is
                skew, once significant.
            false_alarm_rate: The chance that unchanged data reports any drift or skew, over
                all features of one validation.
            anomaly_policy: Anomaly type (TFDV's, or CTLOOP_DRIFT / CTLOOP_SKEW) -> "block" or
                "warn"; unlisted types block.
            stats_sample_rate: Share of rows TFDV statistics are computed on, in (0, 1].
            epochs: Training epochs.
            batch_size: Training batch size.
            learning_rate: Adam's learning rate.
            hidden_units: Sizes of the hidden layers.
            early_stopping_patience: Stop training when the eval split's loss has not improved
                for this many epochs, keeping the best epoch (0: train all ``epochs``).
            user_module: A Python file (in the image, gs:// or s3://) whose
                ``build_model(features, train, hp, task)`` replaces the default model (empty:
                none).
            warm_start: Start training from the baseline's (the serving version's) weights when
                they fit (same task, classes, features, vocabularies and layers); the run record
                says which.
            seed: Seed for reproducible training.
            tune_trials: Trials of a hyperparameter search before train (0: off).
            tune_timeout_s: No trial starts after this many seconds of the search.
            tune_parallelism: Locally, trials at once in worker processes (0: one per core).
            tune_space: Name -> ``{low, high[, log, step]}`` or ``{choices}`` (tune's README).
            tune_validation_percent: Share of the train split the trials are scored on.
            min_auc: Binary value threshold: the candidate's eval AUC must reach it (default:
                off). This and the thresholds below are off when exactly -1.0; any other
                negative value is refused. With a task's value threshold off, the candidate
                must beat a no-skill predictor on the same eval rows (a constant, the majority
                class, the labels' median) by a margin whose 95% bootstrap lower bound is > 0.
            max_auc_decrease: Binary change threshold: how much AUC may drop below the serving
                model's.
            min_accuracy: Multiclass value threshold on eval accuracy (default: off).
            max_accuracy_decrease: Multiclass change threshold: how much accuracy may drop below
                the serving model's.
            max_mae: Regression value threshold: the largest eval mean absolute error, in the
                label's units (default: off).
            max_mae_increase: Regression change threshold: how much the MAE may rise above the
                serving model's, in the label's units (default: off, then at most 1% above it).
            slice_features: Eval columns to report metrics per value of (overall always).
            sensitive_features: Eval columns whose groups evaluate compares (fairness).
            train_on_sensitive_features: Train on them too (default: evaluation only).
            max_fpr_gap: Binary: the largest false positive rate gap between groups (-1.0: none).
            max_tpr_gap: Binary: the largest true positive rate gap between groups (-1.0: none).
            max_fairness_gap_increase: How far either gap may exceed the serving model's (-1.0).
            min_group_size: The fewest rows in a rate's denominator for a group to be judged.
            cold_start: With no serving model: ``bless_on_thresholds`` (bless a first model that
                passes its checks) or ``require_baseline`` (bless none).
            force_bless_reason: Bless whatever evaluation finds, recording this reason and the
                real verdict for audit (empty: not forced). For one-off runs, never schedules.
            serving_python: ``local`` target: the python of the serving environment, in which infra
                validation runs the candidate's model server (empty: none, so nothing is
                infra-blessed).
            max_p99_ms: Infra SLO: p99 latency of single-row requests under concurrent clients.
            min_rps: Infra SLO: requests per second under concurrent clients.
            infra_startup_timeout_s: Infra validation: longest wait for the candidate's server to
                become ready. On a fresh cluster its first pod pulls the storage initializer's
                image and the model before TensorFlow even imports: minutes on a laptop.
            serving_target: Where models are infra-validated and served: ``local`` (server
                processes; the registry's pointer is what serves) or ``kserve`` (a short-lived
                InferenceService for infra validation, then the InferenceService ``model_name``).
            serving_url: ``local`` target: a running server that follows the registry: the new
                version is a canary there first, promoted or rolled back on its errors and latency
                (empty: promote directly).
            canary_percent: The canary's share of requests, on either target.
            release_stage: The registry stage the run deploys to: ``staging`` (production then
                moves only by an approval: ``ctloop promote``, or a run of ``ctloop-promote``)
                or ``production`` (deploy there directly: say so only on purpose).
            release_strategy: How the stage takes the new version: ``canary`` (a share of the
                clients), ``shadow`` (a copy of the requests, answers compared, clients see the
                serving version's) or ``blue_green`` (loaded beside it, checked, switched at once;
                the old kept warm). Shadow and blue-green on the ``local`` target only.
            shadow_min_agreement: Shadow: the least share of rows the new version must answer as
                the serving one does (same label; regression: within the server's tolerance).
            baseline_stage: The stage whose version the candidate is evaluated against and
                replaces (``production``; ``staging`` to judge against the staged version).
            kserve_namespace: ``kserve`` target: the serving namespace.
            kserve_mode: ``kserve`` target: ``Standard`` or ``Knative``.
            kserve_service_account: ``kserve`` target: the ServiceAccount with the object store's
                credentials for KServe's storage initializer.
            serving_image: ``kserve`` target: the ctloop serving image (empty: this release's).
            serving_record_uri: ``kserve`` target: ``s3://BUCKET/PREFIX`` (endpoint
                ``s3_endpoint_url``) the predictor records served requests to, the monitoring
                pipeline's ``records_uri`` (empty: none). Never infra validation's candidate.
            gpu_count: GPUs the train task requests on a cluster, as a string ("0", "1", "2",
                "4", "8" or "16"; the GPU variant's default is "1", the CPU pipeline's "0").
            accelerator_type: The accelerator resource the train task requests.
            mixed_precision: Train in float16 with float32 variables where a GPU is visible (the
                trainer says in its log when it falls back to float32 on CPU).
            beam_pipeline_args: Beam options for TFDV and TFMA (runner, workers, ...).
            notify_email_to: Email recipients of the run's notification ([]: no email).
            notify_email_from: Its sender (empty: the SMTP username if it is an address, else
                ctloop@<host>).
            notify_smtp_host: The SMTP server (empty: no email).
            notify_smtp_port: Its port (465: implicit TLS).
            notify_smtp_starttls: STARTTLS before login and sending (not on port 465).
            notify_on: The outcomes that send a message: succeeded, blocked, failed.
            notify_secret: On a cluster: the Kubernetes Secret (keys ``webhook_url``,
                ``smtp_username``, ``smtp_password``; optional) mounted in the tasks that
                notify. The webhook URL and SMTP login are never parameters; locally they come
                from CTLOOP_NOTIFY_WEBHOOK_URL, CTLOOP_SMTP_USERNAME, CTLOOP_SMTP_PASSWORD.
        """
        notified = notifications.parameters(locals())
        # A failed or cancelled run never reaches a report task: the exit handler's task says so
        # (compiled for a cluster; kfp.local cannot run an exit handler: ctloop.local.runner).
        with notifications.exit_handler(**notified, notify_secret=notify_secret,
                                        enabled=conditions):
            # Caching. KFP keys a task's cache entry by its input parameters' values and its input
            # artifacts' ids. select_span and resolve_baseline look at state outside their inputs
            # (the data, the registry), so they run on every run; what they found (the data's
            # fingerprint, the baseline's) is an input of ingest and load_baseline, whose cache keys
            # then change exactly when the data or the baseline does, and whose artifacts keep their
            # ids while they do not (an uncached task's artifacts are new in every run: no task fed
            # them would ever be a cache hit). Every task from there on is decided by its inputs and
            # cached (train too when it does not warm-start: a new serving version retrains), except
            # infra_validate, whose verdict is the serving runtime's at the time (a slow image pull
            # or a busy node must not stay cached), and rollout, which writes to the registry and
            # deploys. A user module or a curated schema is named by its path: a file changed under
            # the same path needs a new path (or a run with caching off) to be read again.
            selected = select_span(
                data_uri=data_uri, spans=spans, s3_endpoint_url=s3_endpoint_url
            ).set_caching_options(False)
            resolved = resolve_baseline(
                registry_uri=registry_uri, model_name=model_name, span=selected.outputs["span"],
                s3_endpoint_url=s3_endpoint_url, baseline_stage=baseline_stage,
            ).set_caching_options(False)
            baseline = load_baseline(
                registry_uri=registry_uri, model_name=model_name, span=selected.outputs["span"],
                fingerprint=resolved.outputs["fingerprint"], s3_endpoint_url=s3_endpoint_url,
                baseline_stage=baseline_stage,
            ).set_caching_options(True)
            ingested = ingest(
                files=selected.outputs["files"], fingerprint=selected.outputs["fingerprint"],
                spans_read=selected.outputs["spans_read"], label=label, exclude=exclude,
                eval_percent=eval_percent, s3_endpoint_url=s3_endpoint_url,
                positive_label=positive_label, task=task,
            ).set_caching_options(True)
            validated = validate_data(
                train_data=ingested.outputs["train_data"],
                eval_data=ingested.outputs["eval_data"],
                serving_schema=baseline.outputs["schema"],
                reference_statistics=baseline.outputs["statistics"],
                label=label,
                exclude=exclude,
                schema_uri=schema_uri,
                drift_threshold=drift_threshold,
                skew_threshold=skew_threshold,
                false_alarm_rate=false_alarm_rate,
                anomaly_policy=anomaly_policy,
                stats_sample_rate=stats_sample_rate,
                beam_pipeline_args=beam_pipeline_args,
            ).set_caching_options(True)
            data_valid = validated.outputs["Output"]
            # The run's page and its notification: in each gate's Else branch, from the tasks
            # before it, and after rollout (locally only there, from all). Uncached: it notifies,
            # and a cache hit would send nothing.
            def report(stopped: str = "", **artifacts):
                if not stopped or conditions:
                    with dsl.Else(name=stopped) if stopped else contextlib.nullcontext():
                        notifications.mount_secret(run_report(
                            **reported, **artifacts, **notified,
                        ).set_caching_options(False), notify_secret)
            reported = dict(
                spans_read=selected.outputs["spans_read"],
                baseline_schema=baseline.outputs["schema"],
                train_data=ingested.outputs["train_data"], eval_data=ingested.outputs["eval_data"],
                data_valid=data_valid, anomalies=validated.outputs["anomalies"],
                schema=validated.outputs["schema"],
                drift_metrics=validated.outputs["drift_metrics"],
                anomalies_report=validated.outputs["anomalies_report"])
            with gate(data_valid, "data-valid"):
                tuned, tuning = tune_step(conditions, tune_fan_out, locals(), ingested.outputs,
                                          validated.outputs)
                arguments = dict(
                    train_data=ingested.outputs["train_data"],
                    eval_data=ingested.outputs["eval_data"], schema=validated.outputs["schema"],
                    baseline=baseline.outputs["model"], data_valid=data_valid,
                    anomalies=validated.outputs["anomalies"], label=label, exclude=exclude,
                    sensitive_features=sensitive_features,
                    train_on_sensitive_features=train_on_sensitive_features, epochs=epochs,
                    batch_size=batch_size, learning_rate=learning_rate, hidden_units=hidden_units,
                    early_stopping_patience=early_stopping_patience, user_module=user_module,
                    s3_endpoint_url=s3_endpoint_url, seed=seed, mixed_precision=mixed_precision,
                    task=task, warm_start=warm_start, tuned=tuned,
                    # Also an input: kfp 2.13 passes a condition only its tasks' input channels, not
                    # those its tasks' resources name, so the accelerator limit below would resolve
                    # to nothing inside the data-valid condition without it.
                    gpu_count=gpu_count, gpu_type=accelerator_type)
                if workers and conditions:  # a cluster's variant: kfp.local runs train
                    trained = multi_worker_train(workers, arguments, storage_secret)
                else:
                    trained = train(**arguments)
                    schedule_train(trained, gpu, gpu_count, accelerator_type)
                trained.set_caching_options(True)
                evaluated = evaluate(
                    model=trained.outputs["model"],
                    eval_data=ingested.outputs["eval_data"],
                    baseline=baseline.outputs["model"],
                    data_valid=data_valid,
                    label=label,
                    min_auc=min_auc,
                    max_auc_decrease=max_auc_decrease,
                    min_accuracy=min_accuracy,
                    max_accuracy_decrease=max_accuracy_decrease,
                    max_mae=max_mae,
                    max_mae_increase=max_mae_increase,
                    slice_features=slice_features,
                    sensitive_features=sensitive_features, max_fpr_gap=max_fpr_gap,
                    max_tpr_gap=max_tpr_gap, max_fairness_gap_increase=max_fairness_gap_increase,
                    min_group_size=min_group_size,
                    cold_start=cold_start,
                    force_bless_reason=force_bless_reason,
                    beam_pipeline_args=beam_pipeline_args,
                ).set_caching_options(True)
                blessed = evaluated.outputs["Output"]
                judged = dict(blessing=evaluated.outputs["blessing"],
                              evaluation_report=evaluated.outputs["report"],
                              classification_metrics=evaluated.outputs["classification_metrics"],
                              tuning=tuned)
                with gate(blessed, "blessed"):
                    rolled_out = release_step(locals(), gate, report, judged, trained, evaluated,
                                              validated, ingested, baseline)
                report("not-blessed", **judged)
            report("data-invalid")
            # The tasks that read data, the registry or a user module get the object store's
            # credentials as boto3's standard variables, from a Secret on the cluster; ctloop never
            # sees them as parameters.
            for step in (selected, resolved, baseline, ingested, *tuning, trained, rolled_out):
                kubernetes.use_secret_as_env(step, secret_name=storage_secret, secret_key_to_env={
                    "accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"})


    return ct_pipeline


ct_pipeline = build()
