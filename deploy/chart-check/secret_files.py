"""secrets.mountAsFiles: credentials as mounted files (`<NAME>_FILE`), so that a
rotated Secret reaches the running binaries without a restart.

With the chart's own Secret (every secret set) and with an existing Secret
(only the keys listed in secrets.existingSecretKeys), every container must get
`<NAME>_FILE=<mountPath>/<NAME>` for exactly the secrets its binary reads as
files (common.SECRET_FILES) and held by the Secret, never `<NAME>` beside it,
the file holding the value the variable would have held; the Secret is mounted
read-only as a directory (no subPath: the kubelet updates it in place) showing
that pod only its own keys. A changed value read from a file must not roll the
pods; one still passed as a variable must.
"""
from __future__ import annotations

from common import BINARY_READS, SECRET_FILES, SECRET_KEYS, RELEASE, Helm, Report, deep_merge
from settings_reach import effective_env, every_setting_set

MOUNT = "/etc/contexten/secrets"
SECRET = RELEASE  # the chart's fullname: the release name already holds the chart's
# The secrets that may be files (CONTEXTEN_API_TOKENS_FILE is ingest's TOML tokens file).
FILE_SECRETS = SECRET_KEYS - {"CONTEXTEN_API_TOKENS"}
EXISTING = "contexten-credentials"
LISTED = ["GITHUB_WEBHOOK_SECRET", "GITHUB_TOKEN", "LLM_API_KEY", "CONTEXTEN_API_TOKENS"]


def files_values(values: dict, schema: dict) -> dict:
    """Every setting set, secrets as files (also rendered and validated by check_chart)."""
    return deep_merge(every_setting_set(values, schema), {"secrets": {"mountAsFiles": True}})


def pods(docs: list[dict]) -> dict[str, dict]:
    """binary -> pod template of the fleet's Deployments."""
    out = {}
    for d in docs:
        if d["kind"] == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            if c["name"] in BINARY_READS:
                out[c["name"]] = d["spec"]["template"]
    return out


def wiring_problems(docs: list[dict], secret_name: str, held: set[str],
                    as_variables: dict[str, dict[str, str]] | None) -> tuple[list[str], list[str]]:
    """Problems of one files render, and the secrets still passed as variables.
    `as_variables`: the same values rendered without mountAsFiles (the file must
    hold what the variable held), or None for an existing Secret."""
    problems, still_variables = [], []
    envs = effective_env(docs)
    for binary, pod in sorted(pods(docs).items()):
        cid = next(k for k in envs if k.endswith(f"/{binary}") and k.startswith("Deployment/"))
        env = envs[cid]
        want = SECRET_FILES[binary] & held
        got = {v[:-len("_FILE")] for v in env if v.endswith("_FILE") and v[:-len("_FILE")] in FILE_SECRETS}
        if got != want:
            problems.append(f"{binary}: _FILE for {sorted(got)}, expected {sorted(want)}")
        for name in sorted(want & got):
            path = f"{MOUNT}/{name}"
            if env[f"{name}_FILE"] != path:
                problems.append(f"{binary}: {name}_FILE={env[name + '_FILE']}, expected {path}")
            content = env.get(f"file:{path}")
            if content is None or content.startswith("<missing"):
                problems.append(f"{binary}: {path} is not mounted ({content})")
            elif as_variables is not None and as_variables[cid].get(name) != content:
                problems.append(f"{binary}: {path} does not hold what {name} held as a variable")
        plain = sorted(k for k in SECRET_KEYS & set(env) if k in SECRET_FILES[binary] or k in got)
        if plain:
            problems.append(f"{binary}: plain secret variables beside or instead of their files: {plain}")
        still_variables += [f"{binary}:{k}" for k in sorted(SECRET_KEYS & set(env))]

        spec = pod["spec"]
        c = spec["containers"][0]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = [m for m in c.get("volumeMounts", []) if "secret" in volumes.get(m["name"], {})
                  and volumes[m["name"]]["secret"]["secretName"] == secret_name]
        if not want:
            if mounts:
                problems.append(f"{binary}: reads no secret file but mounts {secret_name}")
            continue
        if len(mounts) != 1:
            problems.append(f"{binary}: {len(mounts)} mounts of {secret_name}, expected 1")
            continue
        m = mounts[0]
        if m["mountPath"] != MOUNT or not m.get("readOnly") or "subPath" in m or "subPathExpr" in m:
            problems.append(f"{binary}: mount {m} is not a read-only directory at {MOUNT}")
        vol = volumes[m["name"]]["secret"]
        keys = sorted(i["key"] for i in vol.get("items") or [])
        if keys != sorted(want):
            problems.append(f"{binary}: the pod sees keys {keys or 'all'}, expected only {sorted(want)}")
        if vol.get("optional"):
            problems.append(f"{binary}: the secrets volume is optional (a missing key would start a binary without its file)")
    return problems, still_variables


def check_secret_files(helm: Helm, values: dict, schema: dict, rep: Report) -> None:
    print("secrets as files (secrets.mountAsFiles)")
    full = every_setting_set(values, schema)
    as_files = files_values(values, schema)
    env_docs, err = helm.template(values=full)
    file_docs, err2 = helm.template(values=as_files)
    if not rep.check(env_docs is not None and file_docs is not None,
                     "[chart's Secret] renders with secrets as variables and as files", err or err2):
        return
    problems, plain = wiring_problems(file_docs, SECRET, SECRET_KEYS, effective_env(env_docs))
    total = sum(len(s) for s in SECRET_FILES.values())
    rep.check(not problems, f"[chart's Secret] every container gets <NAME>_FILE for its {total} file secrets, "
              f"no plain variable beside them, a read-only directory of its own keys "
              f"(variables only: {', '.join(plain)})", "; ".join(problems))

    existing = deep_merge(as_files, {"secrets": {"existingSecret": EXISTING, "existingSecretKeys": LISTED}})
    docs, err = helm.template(values=existing)
    if rep.check(docs is not None, "[existingSecret] renders with secrets as files", err):
        problems, _ = wiring_problems(docs, EXISTING, set(LISTED), None)
        problems += [f"a Secret {d['metadata']['name']} is rendered" for d in docs
                     if d["kind"] == "Secret" and d["metadata"]["name"] == SECRET]
        rep.check(not problems, f"[existingSecret] only the listed keys ({', '.join(LISTED)}) become files",
                  "; ".join(problems))

    # Rotation: a new value read from a file leaves the pods alone (the kubelet
    # updates the mounted file); one passed as a variable rolls its pods.
    before = pods(file_docs)
    problems = []
    for value_key, rolls in (("llmApiKey", set()), ("slackBotToken", set()), ("githubWebhookSecret", set()),
                             ("cacheEncryptionKey", set()),
                             ("githubToken", set()),
                             ("contextenApiTokens", {"ingest"})):
        docs, err = helm.template(values=deep_merge(as_files, {"secrets": {value_key: f"rotated-{value_key}"}}))
        if docs is None:
            problems.append(f"{value_key}: {err}")
            continue
        after = pods(docs)
        rolled = {b for b in before if before[b] != after.get(b)}
        if rolled != rolls:
            problems.append(f"secrets.{value_key} changed rolls {sorted(rolled) or 'nothing'}, expected {sorted(rolls) or 'nothing'}")
    rep.check(not problems, "[chart's Secret] a rotated file secret rolls no pod; a variable one rolls its readers",
              "; ".join(problems))
