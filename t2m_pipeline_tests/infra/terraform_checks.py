"""Read infra/terraform with python-hcl2 and compare it with the Python declarations of the buckets.

The Python side (config.bucket_name, storage/bucket_settings.py) is the one source of truth; these helpers render
what a Terraform directory would apply for one environment and list every difference, as plain strings. They work on
any directory, so a test can break a copy of a module on purpose and watch the difference being reported.

Only the expressions the modules use are evaluated: literals, `var.*`, `local.*`, string templates, `==`/`!=`,
`cond ? a : b`, `toset([...])`, indexing of the bucket resource, and a table of opaque references (data sources,
KMS keys) that the caller maps to sentinel values. Anything else raises `Unresolvable`, which the checks report as a
difference rather than guessing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import hcl2

from t2m_pipeline.config import BUCKET_KINDS, Settings
from t2m_pipeline.storage.bucket_settings import (
    PUBLIC_ACCESS_BLOCK,
    VIDEOS_INTELLIGENT_TIERING_DAYS,
    bucket_spec,
)

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "infra" / "terraform"
MODULES = TERRAFORM / "modules"
ENVIRONMENTS = TERRAFORM / "environments"
STORAGE_MODULE = MODULES / "storage"

# Stand-ins for values only AWS knows at plan time. Deliberately not the defaults, so a hard-coded region or
# account in a bucket name shows up as a difference.
REGION = "eu-west-3"
ACCOUNT_ID = "123456789012"
KMS_KEY = "arn:aws:kms:eu-west-3:123456789012:key/sentinel"

TIERING_RULE = {
    "ID": "videos-intelligent-tiering",
    "Status": "Enabled",
    "Filter": {"Prefix": ""},
    "Transitions": [{"Days": VIDEOS_INTELLIGENT_TIERING_DAYS, "StorageClass": "INTELLIGENT_TIERING"}],
}

# Terraform attribute -> boto3 key of bucket_settings.PUBLIC_ACCESS_BLOCK.
PUBLIC_ACCESS_BLOCK_ATTRIBUTES = {
    "block_public_acls": "BlockPublicAcls",
    "ignore_public_acls": "IgnorePublicAcls",
    "block_public_policy": "BlockPublicPolicy",
    "restrict_public_buckets": "RestrictPublicBuckets",
}


# --- parsing ---------------------------------------------------------------------------------------------------------


def load_hcl_file(path: Path) -> dict:
    """One .tf file as plain Python values (python-hcl2 8.x needs options for that; 7.x gives them by default)."""
    try:
        from hcl2.utils import SerializationOptions
    except ImportError:  # python-hcl2 < 8
        with path.open() as handle:
            return hcl2.load(handle)
    options = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    with path.open() as handle:
        return hcl2.load(handle, serialization_options=options)


@dataclass
class TerraformDir:
    """The merged top-level blocks of every .tf file in one directory."""

    path: Path
    resources: dict[str, dict[str, dict]] = field(default_factory=dict)
    data: dict[str, dict[str, dict]] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, dict] = field(default_factory=dict)
    terraform: list[dict] = field(default_factory=list)

    def resource(self, type_: str, name: str) -> dict:
        try:
            return self.resources[type_][name]
        except KeyError:
            raise KeyError(f"{self.path.name}: no resource {type_}.{name}") from None

    def variable_default(self, name: str) -> Any:
        return self.variables.get(name, {}).get("default")


def load_dir(directory: Path) -> TerraformDir:
    return _load_dir(Path(directory).resolve(), _dir_stamp(Path(directory)))


def _dir_stamp(directory: Path) -> tuple:
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(directory.glob("*.tf")))


@lru_cache(maxsize=64)
def _load_dir(directory: Path, _stamp: tuple) -> TerraformDir:
    tf = TerraformDir(directory)
    files = sorted(directory.glob("*.tf"))
    if not files:
        raise FileNotFoundError(f"no .tf files in {directory}")
    for path in files:
        parsed = load_hcl_file(path)
        for block in parsed.get("resource", []):
            for type_, named in block.items():
                tf.resources.setdefault(type_, {}).update(named)
        for block in parsed.get("data", []):
            for type_, named in block.items():
                tf.data.setdefault(type_, {}).update(named)
        for block in parsed.get("variable", []):
            tf.variables.update(block)
        for block in parsed.get("locals", []):
            tf.locals.update(block)
        for block in parsed.get("module", []):
            tf.modules.update(block)
        tf.terraform.extend(parsed.get("terraform", []))
    return tf


# --- expressions -----------------------------------------------------------------------------------------------------


class Unresolvable(ValueError):
    """An expression outside the small subset evaluated here."""


_INDEXED = re.compile(r"^([A-Za-z_][\w-]*\.[A-Za-z_][\w-]*)\[(.+)\]\.([A-Za-z_]+)$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


@dataclass
class Scope:
    """What names mean while evaluating one module instance."""

    variables: Mapping[str, Any]
    locals: Mapping[str, Any]
    refs: Mapping[str, Any] = field(default_factory=dict)
    # "aws_s3_bucket.this" -> f(key, attribute) for references like aws_s3_bucket.this["temp"].id
    indexed: Mapping[str, Callable[[str, str], Any]] = field(default_factory=dict)

    def with_refs(self, **refs: Any) -> Scope:
        merged = dict(self.refs)
        merged.update({key.replace("__", "."): value for key, value in refs.items()})
        return Scope(self.variables, self.locals, merged, self.indexed)

    def resolve(self, value: Any, _seen: tuple[str, ...] = ()) -> Any:
        """Evaluate an attribute value: lists and maps element-wise, strings as templates."""
        if isinstance(value, list):
            return [self.resolve(item, _seen) for item in value]
        if isinstance(value, dict):
            return {key: self.resolve(item, _seen) for key, item in value.items()}
        if not isinstance(value, str):
            return value
        parts = list(_template_parts(value))
        if len(parts) == 1 and parts[0][0]:
            return self.evaluate(parts[0][1], _seen)
        out = []
        for is_expr, text in parts:
            if is_expr:
                result = self.evaluate(text, _seen)
                if isinstance(result, (list, dict)) or result is None:
                    raise Unresolvable(f"cannot interpolate {text!r} into {value!r}")
                out.append(_hcl_str(result))
            else:
                out.append(text)
        return "".join(out)

    def evaluate(self, expr: str, _seen: tuple[str, ...] = ()) -> Any:
        expr = _strip_parens(expr.strip())
        question = _find_top_level(expr, "?")
        if question is not None:
            colon = _find_top_level(expr, ":", start=question + 1)
            if colon is None:
                raise Unresolvable(f"malformed conditional {expr!r}")
            condition = self.evaluate(expr[:question], _seen)
            branch = expr[question + 1 : colon] if condition else expr[colon + 1 :]
            return self.evaluate(branch, _seen)
        for operator in ("==", "!="):
            position = _find_top_level(expr, operator)
            if position is not None:
                left = self.evaluate(expr[:position], _seen)
                right = self.evaluate(expr[position + 2 :], _seen)
                return (left == right) if operator == "==" else (left != right)
        if expr.startswith('"') and expr.endswith('"'):
            return self.resolve(expr[1:-1], _seen)
        if expr == "true":
            return True
        if expr == "false":
            return False
        if expr == "null":
            return None
        if _NUMBER.match(expr):
            return float(expr) if "." in expr else int(expr)
        if expr.startswith("[") and expr.endswith("]"):
            return [self.evaluate(item, _seen) for item in _split_top_level(expr[1:-1], ",") if item.strip()]
        if expr.startswith("toset(") and expr.endswith(")"):
            items = self.evaluate(expr[len("toset(") : -1], _seen)
            if not isinstance(items, list):
                raise Unresolvable(f"toset of a non-list in {expr!r}")
            return list(dict.fromkeys(items))
        if expr in self.refs:
            return self.refs[expr]
        if expr.startswith("var."):
            name = expr[4:]
            if name not in self.variables:
                raise Unresolvable(f"unknown variable {name!r}")
            return self.variables[name]
        if expr.startswith("local."):
            name = expr[6:]
            if name not in self.locals:
                raise Unresolvable(f"unknown local {name!r}")
            if name in _seen:
                raise Unresolvable(f"cycle through local {name!r}")
            return self.resolve(self.locals[name], (*_seen, name))
        indexed = _INDEXED.match(expr)
        if indexed and indexed.group(1) in self.indexed:
            key = self.evaluate(indexed.group(2), _seen)
            return self.indexed[indexed.group(1)](str(key), indexed.group(3))
        raise Unresolvable(f"cannot evaluate {expr!r}")


def _hcl_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _template_parts(text: str) -> Iterator[tuple[bool, str]]:
    """Split "a-${x}-b" into (False, "a-"), (True, "x"), (False, "-b"), honouring nested braces and quotes."""
    i = 0
    literal_start = 0
    while i < len(text):
        if text.startswith("${", i):
            if i > literal_start:
                yield False, text[literal_start:i]
            depth, j, quote = 1, i + 2, False
            while j < len(text) and depth:
                char = text[j]
                if char == "\\" and quote:
                    j += 2
                    continue
                if char == '"':
                    quote = not quote
                elif not quote and char == "{":
                    depth += 1
                elif not quote and char == "}":
                    depth -= 1
                j += 1
            if depth:
                raise Unresolvable(f"unbalanced interpolation in {text!r}")
            yield True, text[i + 2 : j - 1]
            i = literal_start = j
        else:
            i += 1
    if literal_start < len(text) or not text:
        yield False, text[literal_start:]


def _scan(text: str) -> Iterator[tuple[int, str, int]]:
    """Yield (index, char, depth) for characters outside string literals."""
    depth, quote, i = 0, False, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 2
                continue
            if char == '"':
                quote = False
        elif char == '"':
            quote = True
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        else:
            yield i, char, depth
        i += 1


def _find_top_level(text: str, token: str, start: int = 0) -> int | None:
    for index, _char, depth in _scan(text):
        if index >= start and depth == 0 and text.startswith(token, index):
            return index
    return None


def _split_top_level(text: str, separator: str) -> list[str]:
    pieces, last = [], 0
    for index, char, depth in _scan(text):
        if depth == 0 and char == separator:
            pieces.append(text[last:index])
            last = index + 1
    pieces.append(text[last:])
    return pieces


def _strip_parens(expr: str) -> str:
    while expr.startswith("(") and expr.endswith(")"):
        depth = 0
        for index, char in enumerate(expr):
            depth += char == "("
            depth -= char == ")"
            if depth == 0 and index < len(expr) - 1:
                return expr
        expr = expr[1:-1].strip()
    return expr


# --- environments ----------------------------------------------------------------------------------------------------


def environment_roots() -> dict[str, Path]:
    return {path.name: path for path in sorted(ENVIRONMENTS.iterdir()) if path.is_dir()}


def root_scope(root: TerraformDir) -> Scope:
    variables = {name: body.get("default") for name, body in root.variables.items()}
    return Scope(variables=variables, locals=root.locals)


def module_inputs(root_dir: Path, module_name: str) -> tuple[Path, dict[str, Any]]:
    """Source directory of a module call in an environment root, and its inputs evaluated in the root.

    Inputs that come from other modules' outputs stay unevaluated (None), the storage inputs are all literals or
    locals.
    """
    root = load_dir(root_dir)
    if module_name not in root.modules:
        raise KeyError(f"{root_dir.name}: no module {module_name!r}")
    call = root.modules[module_name]
    scope = root_scope(root)
    inputs: dict[str, Any] = {}
    for key, value in call.items():
        if key in ("source", "providers", "depends_on", "count", "for_each", "version"):
            continue
        try:
            inputs[key] = scope.resolve(value)
        except Unresolvable:
            inputs[key] = None
    return (root_dir / call["source"]).resolve(), inputs


def instance_variables(module: TerraformDir, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The module's variables as one call sets them: given inputs, else declared defaults."""
    unknown = set(inputs) - set(module.variables)
    if unknown:
        raise KeyError(f"{module.path.name}: inputs {sorted(unknown)} are not variables of the module")
    return {name: inputs.get(name, body.get("default")) for name, body in module.variables.items()}


# --- the storage module, rendered ------------------------------------------------------------------------------------


@dataclass
class RenderedStorage:
    """What one instance of the storage module declares for the four buckets, in boto3's shapes."""

    environment: str
    kinds: list[str]
    names: dict[str, str]
    versioning: dict[str, str]
    encryption: dict[str, dict]
    public_access_block: dict[str, dict]
    policies: dict[str, dict]
    lifecycle: dict[str, list[dict]]
    logging: set[str]
    kms_key_rotation: bool | None
    problems: list[str]


def render_storage(module_dir: Path, inputs: Mapping[str, Any]) -> RenderedStorage:
    module = load_dir(module_dir)
    variables = instance_variables(module, inputs)
    env = variables["environment"]
    base = Scope(
        variables=variables,
        locals=module.locals,
        refs={
            "data.aws_region.current.name": REGION,
            "data.aws_caller_identity.current.account_id": ACCOUNT_ID,
            "aws_kms_key.s3[0].arn": KMS_KEY,
        },
    )
    problems: list[str] = []

    bucket = module.resource("aws_s3_bucket", "this")
    kinds = _as_list(base.resolve(bucket.get("for_each")))
    names = {kind: base.with_refs(each__key=kind).resolve(bucket["bucket"]) for kind in kinds}

    def bucket_attribute(key: str, attribute: str) -> str:
        if key not in names:
            raise Unresolvable(f"aws_s3_bucket.this[{key!r}] is not one of the buckets {sorted(names)}")
        if attribute in ("id", "bucket"):
            return names[key]
        if attribute == "arn":
            return f"arn:aws:s3:::{names[key]}"
        raise Unresolvable(f"aws_s3_bucket.this[{key!r}].{attribute}")

    scope = Scope(base.variables, base.locals, base.refs, {"aws_s3_bucket.this": bucket_attribute})

    def per_bucket(type_: str, name: str = "this") -> Iterator[tuple[str, dict, Scope]]:
        """(kind, body, scope) for every bucket a for_each resource covers, checking it covers exactly the four."""
        body = module.resource(type_, name)
        covered = _as_list(scope.resolve(body.get("for_each")))
        if covered != kinds:
            problems.append(f"{type_}.{name} covers {covered}, expected every bucket {kinds}")
        for kind in covered:
            each = scope.with_refs(each__key=kind)
            target = each.resolve(body["bucket"])
            if target != names.get(kind):
                problems.append(f"{type_}.{name}[{kind!r}] targets {target!r}, expected {names.get(kind)!r}")
            yield kind, body, each

    versioning = {}
    for kind, body, each in per_bucket("aws_s3_bucket_versioning"):
        versioning[kind] = each.resolve(_one(body, "versioning_configuration")["status"])

    encryption = {}
    for kind, body, each in per_bucket("aws_s3_bucket_server_side_encryption_configuration"):
        rules = []
        for rule in body.get("rule", []):
            default = _one(rule, "apply_server_side_encryption_by_default")
            applied: dict[str, Any] = {"SSEAlgorithm": each.resolve(default["sse_algorithm"])}
            key_id = each.resolve(default.get("kms_master_key_id"))
            if key_id is not None:
                applied["KMSMasterKeyID"] = key_id
            rendered: dict[str, Any] = {"ApplyServerSideEncryptionByDefault": applied}
            if each.resolve(rule.get("bucket_key_enabled", False)):
                rendered["BucketKeyEnabled"] = True
            rules.append(rendered)
        encryption[kind] = {"Rules": rules}

    public_access_block = {}
    for kind, body, each in per_bucket("aws_s3_bucket_public_access_block"):
        public_access_block[kind] = {
            boto_key: each.resolve(body.get(attribute)) for attribute, boto_key in PUBLIC_ACCESS_BLOCK_ATTRIBUTES.items()
        }

    policies = {}
    for kind, body, each in per_bucket("aws_s3_bucket_policy"):
        reference = _single_expression(body.get("policy"))
        match = re.fullmatch(r"data\.aws_iam_policy_document\.([\w-]+)\[each\.key\]\.json", reference or "")
        if not match:
            problems.append(f"aws_s3_bucket_policy.this policy is {body.get('policy')!r}, expected a policy document")
            continue
        document = module.data.get("aws_iam_policy_document", {}).get(match.group(1))
        if document is None:
            problems.append(f"aws_s3_bucket_policy.this refers to a missing document {match.group(1)!r}")
            continue
        policies[kind] = render_policy_document(document, each)

    logging = {kind for kind, _body, _each in per_bucket("aws_s3_bucket_logging")}

    lifecycle: dict[str, list[dict]] = {}
    for name, body in module.resources.get("aws_s3_bucket_lifecycle_configuration", {}).items():
        candidates = _as_list(scope.resolve(body["for_each"])) if "for_each" in body else [None]
        for key in candidates:
            each = scope.with_refs(each__key=key) if key is not None else scope
            try:
                target = each.resolve(body["bucket"])
            except Unresolvable:
                continue  # not a data bucket (audit logs, replicas)
            kind = next((kind for kind, bucket_name in names.items() if bucket_name == target), None)
            if kind is None:
                continue
            if kind in lifecycle:
                problems.append(f"bucket {kind!r} has more than one lifecycle configuration (last: {name})")
            lifecycle[kind] = [render_lifecycle_rule(rule, each) for rule in body.get("rule", [])]

    rotation = None
    kms_keys = module.resources.get("aws_kms_key", {})
    if "s3" in kms_keys:
        rotation = bool(scope.resolve(kms_keys["s3"].get("enable_key_rotation", False)))

    return RenderedStorage(
        environment=env,
        kinds=kinds,
        names=names,
        versioning=versioning,
        encryption=encryption,
        public_access_block=public_access_block,
        policies=policies,
        lifecycle=lifecycle,
        logging=logging,
        kms_key_rotation=rotation,
        problems=problems,
    )


def render_lifecycle_rule(rule: Mapping[str, Any], scope: Scope) -> dict:
    """A Terraform lifecycle `rule` block in the boto3 shape of bucket_settings.lifecycle_rules()."""
    rendered: dict[str, Any] = {"ID": scope.resolve(rule.get("id")), "Status": scope.resolve(rule.get("status"))}
    filters = rule.get("filter", [])
    if filters:
        prefix = scope.resolve(filters[0].get("prefix", ""))
        rendered["Filter"] = {"Prefix": prefix or ""}
    for block in rule.get("abort_incomplete_multipart_upload", []):
        rendered["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": scope.resolve(block["days_after_initiation"])
        }
    for block in rule.get("noncurrent_version_expiration", []):
        rendered["NoncurrentVersionExpiration"] = {"NoncurrentDays": scope.resolve(block["noncurrent_days"])}
    for block in rule.get("expiration", []):
        rendered["Expiration"] = {"Days": scope.resolve(block["days"])}
    transitions = [
        {"Days": scope.resolve(block["days"]), "StorageClass": scope.resolve(block["storage_class"])}
        for block in rule.get("transition", [])
    ]
    if transitions:
        rendered["Transitions"] = transitions
    unknown = set(rule) - {
        "id",
        "status",
        "filter",
        "abort_incomplete_multipart_upload",
        "noncurrent_version_expiration",
        "expiration",
        "transition",
    }
    if unknown:
        rendered["Unchecked"] = sorted(unknown)
    return rendered


def render_policy_document(document: Mapping[str, Any], scope: Scope) -> dict:
    """An aws_iam_policy_document data source as the IAM JSON policy it renders."""
    statements = []
    for statement in document.get("statement", []):
        rendered: dict[str, Any] = {}
        if "sid" in statement:
            rendered["Sid"] = scope.resolve(statement["sid"])
        rendered["Effect"] = scope.resolve(statement.get("effect", "Allow"))
        principals = statement.get("principals", [])
        if principals:
            principal: Any = {}
            for block in principals:
                type_ = scope.resolve(block["type"])
                identifiers = scope.resolve(block["identifiers"])
                if type_ == "*" and identifiers == ["*"]:
                    principal = "*"
                else:
                    principal.setdefault(type_, []).extend(identifiers)
            rendered["Principal"] = principal
        if "actions" in statement:
            rendered["Action"] = scope.resolve(statement["actions"])
        if "resources" in statement:
            rendered["Resource"] = scope.resolve(statement["resources"])
        conditions: dict[str, dict] = {}
        for block in statement.get("condition", []):
            conditions.setdefault(scope.resolve(block["test"]), {})[scope.resolve(block["variable"])] = scope.resolve(
                block["values"]
            )
        if conditions:
            rendered["Condition"] = conditions
        statements.append(rendered)
    return {"Version": "2012-10-17", "Statement": statements}


def normalize_policy(policy: Mapping[str, Any]) -> dict:
    """Policies compare equal when they mean the same: single values and one-element lists alike, order ignored."""

    def values(value: Any) -> Any:
        if isinstance(value, list):
            return sorted(str(item) for item in value)
        return [str(value)]

    statements = []
    for statement in policy.get("Statement", []):
        normalized = dict(statement)
        for key in ("Action", "Resource", "NotAction", "NotResource"):
            if key in normalized:
                normalized[key] = values(normalized[key])
        if isinstance(normalized.get("Principal"), dict):
            normalized["Principal"] = {k: values(v) for k, v in normalized["Principal"].items()}
        if "Condition" in normalized:
            normalized["Condition"] = {
                test: {variable: values(value) for variable, value in pairs.items()}
                for test, pairs in normalized["Condition"].items()
            }
        statements.append(normalized)
    return {"Version": policy.get("Version"), "Statement": statements}


# --- the comparison --------------------------------------------------------------------------------------------------


def declared_settings(env: str, sse_algorithm: str, noncurrent_version_days: int | None = None) -> Settings:
    """The Settings an environment's platform runs with, at the sentinel region and account."""
    return Settings(
        env=env,
        region=REGION,
        account_id=ACCOUNT_ID,
        sse_algorithm=sse_algorithm,
        kms_key_id=KMS_KEY if sse_algorithm == "aws:kms" else None,
        noncurrent_version_days=(
            Settings().noncurrent_version_days if noncurrent_version_days is None else noncurrent_version_days
        ),
    )


def expected_lifecycle(kind: str, settings: Settings) -> list[dict]:
    rules = [dict(rule) for rule in bucket_spec(settings, kind).lifecycle_rules]
    if kind == "videos":
        rules.append(dict(TIERING_RULE))
    return rules


def check_storage_module(module_dir: Path, inputs: Mapping[str, Any], settings: Settings) -> list[str]:
    """Every difference between one instance of the storage module and the Python declarations for `settings`."""
    try:
        rendered = render_storage(module_dir, inputs)
    except (Unresolvable, KeyError) as error:
        return [f"cannot render the storage module: {error}"]
    problems = list(rendered.problems)
    if rendered.environment != settings.env:
        problems.append(f"environment is {rendered.environment!r}, expected {settings.env!r}")
    if rendered.kinds != list(BUCKET_KINDS):
        problems.append(f"bucket kinds are {rendered.kinds}, config.BUCKET_KINDS is {list(BUCKET_KINDS)}")
    for kind in BUCKET_KINDS:
        spec = bucket_spec(settings, kind)
        name = rendered.names.get(kind)
        if name != spec.name:
            problems.append(f"{kind}: bucket name renders as {name!r}, config.bucket_name() gives {spec.name!r}")
        if rendered.versioning.get(kind) != spec.versioning:
            problems.append(f"{kind}: versioning is {rendered.versioning.get(kind)!r}, declared {spec.versioning!r}")
        if rendered.encryption.get(kind) != spec.encryption_configuration():
            problems.append(
                f"{kind}: encryption is {rendered.encryption.get(kind)}, declared {spec.encryption_configuration()}"
            )
        if rendered.public_access_block.get(kind) != PUBLIC_ACCESS_BLOCK:
            problems.append(
                f"{kind}: public access block is {rendered.public_access_block.get(kind)}, declared {PUBLIC_ACCESS_BLOCK}"
            )
        policy = rendered.policies.get(kind)
        if policy is None or normalize_policy(policy) != normalize_policy(spec.policy):
            problems.append(f"{kind}: bucket policy is {policy}, declared (TLS-only) {spec.policy}")
        if kind not in rendered.logging:
            problems.append(f"{kind}: no access logging")
        actual_rules = {rule.get("ID"): rule for rule in rendered.lifecycle.get(kind, [])}
        expected_rules = {rule["ID"]: rule for rule in expected_lifecycle(kind, settings)}
        for rule_id in sorted(set(actual_rules) | set(expected_rules), key=str):
            actual, expected = actual_rules.get(rule_id), expected_rules.get(rule_id)
            if actual != expected:
                problems.append(f"{kind}: lifecycle rule {rule_id!r} is {actual}, declared {expected}")
    if settings.sse_algorithm == "aws:kms" and rendered.kms_key_rotation is not True:
        problems.append("the S3 KMS key does not rotate (enable_key_rotation)")
    return problems


EXPECTED_SSE = {"dev": "AES256", "staging": "AES256", "prod": "aws:kms"}


def check_environment(env_root: Path, expected_sse: str | None = None) -> list[str]:
    """Compare an environment root's storage module call with the declarations for that environment."""
    env = env_root.name
    try:
        module_dir, inputs = module_inputs(env_root, "storage")
    except (KeyError, FileNotFoundError) as error:
        return [f"{env}: {error}"]
    sse = expected_sse or EXPECTED_SSE.get(env, Settings().sse_algorithm)
    return [f"{env}: {problem}" for problem in check_storage_module(module_dir, inputs, declared_settings(env, sse))]


# --- small helpers ---------------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value)
    raise Unresolvable(f"expected a list, got {value!r}")


def _one(body: Mapping[str, Any], block: str) -> dict:
    blocks = body.get(block, [])
    if len(blocks) != 1:
        raise Unresolvable(f"expected one {block} block, found {len(blocks)}")
    return blocks[0]


def _single_expression(value: Any) -> str | None:
    if isinstance(value, str):
        parts = list(_template_parts(value))
        if len(parts) == 1 and parts[0][0]:
            return parts[0][1].strip()
    return None


def iter_tf_files() -> list[Path]:
    return sorted(TERRAFORM.rglob("*.tf"))


def iter_policy_documents() -> Iterator[tuple[str, str, dict]]:
    """(module directory name, document name, body) of every aws_iam_policy_document in the modules."""
    for module_dir in sorted(MODULES.iterdir()):
        if module_dir.is_dir():
            for name, body in load_dir(module_dir).data.get("aws_iam_policy_document", {}).items():
                yield module_dir.name, name, body
