"""KFP component: start one run of the CT pipeline through the KFP API, from inside a pipeline."""

from kfp import dsl

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def trigger_run(
    kfp_host: str,
    pipeline_name: str,
    pipeline_version: str,
    experiment: str,
    parameters: dict,
    state_uri: str,
    s3_endpoint_url: str,
) -> str:
    """Starts one run of a pipeline version by name on KFP, with the code ``ctloop submit``
    uses (the version resolved, the parameters checked and typed against its spec), and records
    the run's id in the monitor's trigger state.

    Put it behind the monitor task's ``start_run`` (``dsl.If``): the monitor claims the drift
    episode in the state before this task runs, so a retried or repeated pass never starts a
    second run for one episode. Run it uncached.

    Args:
        kfp_host: The KFP API as seen from a pipeline pod, e.g.
            ``http://ml-pipeline.kubeflow:8888``. A bearer token comes from ``KFP_TOKEN`` or the
            projected service-account token of multi-user Kubeflow, never from a parameter.
        pipeline_name: The CT pipeline's name on KFP.
        pipeline_version: A version name, or ``latest``.
        experiment: The experiment the run belongs to (created if missing).
        parameters: The CT run's parameters (``data_uri``, ``label``, ``registry_uri``, ...).
        state_uri: The trigger's state (the monitor task's ``trigger_state``).
        s3_endpoint_url: An S3-compatible endpoint of an ``s3://`` state; ``""``: boto3's
            default.

    Returns:
        The id of the run started.
    """
    from ctloop.components.trigger_run import logic
    from ctloop.kfp import api

    client = api.connect(kfp_host, logic.token())
    return logic.run(client, kfp_host, pipeline_name, pipeline_version, experiment, parameters,
                     state_uri, None, s3_endpoint_url or None)
