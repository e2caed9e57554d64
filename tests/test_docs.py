"""Every command in the documentation parses as written.

The fenced ```bash blocks of README.md and docs/*.md are read line by line (backslash
continuations joined, comments dropped, `&&`, `||`, `;` and `|` separating commands). A
command that runs one of the project's scripts (train.py, evaluate_depth.py, test_simple.py,
..., benchmarks/*.py, `python -m synthetic_world`, also under `torchrun` or `.venv/bin/`) is
checked without running it: train.py through options.build_parser for the method the
command selects (--method, the preset's `method:`, a selector flag), with the preset's values
as defaults; every other script through its own argparse parser, stopped right after
parsing. An unknown flag, a bad choice or a missing required option fails. Lines of other
programs (pip, wget, tensorboard, cd, ...) are skipped by rule; any other program fails, so
that no command goes unchecked. Resume commands and weight folders must name a run that a
documented training command writes, and a `weights_N` folder must be one that run keeps.
"""
import argparse
import contextlib
import functools
import glob
import importlib
import importlib.util
import inspect
import io
import os
import re
import shlex
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))

# the number of project commands the documents hold today; fewer means a block was lost
MIN_COMMANDS = 171

ROOT_SCRIPTS = ("train.py", "evaluate_depth.py", "test_simple.py", "test_video.py", "export_model.py",
                "export_gt_depth.py", "precompute_depth_hints.py", "evaluate_pose.py", "quickstart.py",
                "import_reference_weights.py", "prepare_cityscapes.py", "prepare_kitti_odom_depth.py")
PROJECT_MODULES = ("synthetic_world", "datasets.synthetic_world")
# programs whose lines are not commands of the project: skipped, by name
OTHER_PROGRAMS = ("pip", "pip3", "wget", "cd", "unzip", "find", "parallel", "convert", "rm", "tensorboard",
                  "bash")  # bash: the project's shell scripts (they must exist), not parsed further
OTHER_PYTHON_MODULES = ("venv", "pip", "pytest")
SHELL_OPERATORS = ("&&", "||", ";", "|")
WEIGHT_FOLDER_OPTIONS = ("--load_weights_folder", "--teacher_weights_folder", "--mono_weights_folder",
                         "--mnet_weights_folder")
RUN_FOLDER = re.compile(r"^(?P<log_dir>.+)/(?P<name>[^/]+)/models/(?P<folder>weights_(?P<epoch>\d+)|weights_best|last)/?$")
DEFAULT_LOG_DIR = os.path.join(os.path.expanduser("~"), "tmp")

# documented commands that do not parse because of a bug in the code: {command text: bug}
KNOWN_CODE_BUGS = {}


class Command:
    def __init__(self, doc, line, text, program, script, argv):
        self.doc, self.line, self.text = doc, line, text
        self.program, self.script, self.argv = program, script, argv

    @property
    def where(self):
        return f"{self.doc}:{self.line}"


def bash_lines(path):
    """(line number, logical line) of every ```bash block of a Markdown file."""
    with open(os.path.join(ROOT, path)) as f:
        lines = f.read().splitlines()
    out, in_bash, pending, start = [], False, "", 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            assert not pending, f"{path}:{start}: a continued line runs into the end of its block"
            in_bash = not in_bash and stripped[3:].strip() == "bash"
            continue
        if not in_bash:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def split_commands(text):
    """A shell line -> its commands' tokens (comments dropped, split at shell operators)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens, commands = list(lexer), [[]]
    for token in tokens:
        if token in SHELL_OPERATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def classify(tokens):
    """("project", script, argv) | ("other", program, None) | ("unknown", what, None)."""
    while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
        tokens = tokens[1:]  # VAR=value before the program
    program = tokens[0]
    for prefix in (".venv/bin/", "./"):
        if program.startswith(prefix):
            program = program[len(prefix):]
    args = tokens[1:]
    if program in ("python", "python3"):
        if args[:1] == ["-m"]:
            module = args[1]
            if module in PROJECT_MODULES:
                return "project", "-m synthetic_world", args[2:]
            if module in OTHER_PYTHON_MODULES:
                return "other", f"python -m {module}", None
            return "unknown", f"python -m {module}", None
        script = args[0][2:] if args and args[0].startswith("./") else (args[0] if args else "")
        if script in ROOT_SCRIPTS or (script.startswith("benchmarks/") and os.path.isfile(os.path.join(ROOT, script))):
            return "project", script, args[1:]
        return "unknown", f"python {script}", None
    if program == "torchrun":
        for i, token in enumerate(args):
            if token.endswith(".py"):
                return ("project", token, args[i + 1:]) if token in ROOT_SCRIPTS else ("unknown", token, None)
        return "unknown", "torchrun without a script", None
    if program == "bash" and not (args and os.path.isfile(os.path.join(ROOT, args[0]))):
        return "unknown", f"bash {args[0] if args else ''}", None
    if program in OTHER_PROGRAMS:
        return "other", program, None
    return "unknown", program, None


@functools.lru_cache(maxsize=None)
def documented():
    """(project commands, skipped lines, unclassified lines) of all the documents."""
    commands, skipped, unknown = [], [], []
    for doc in DOCUMENTS:
        for line, text in bash_lines(doc):
            for tokens in split_commands(text):
                kind, what, argv = classify(tokens)
                if kind == "project":
                    commands.append(Command(doc, line, text.strip(), tokens[0], what, argv))
                elif kind == "other":
                    skipped.append((doc, line, what))
                else:
                    unknown.append(f"{doc}:{line}: {what}")
    return commands, skipped, unknown


# ------------------------------------------------------------------ checking options


class Stop(Exception):
    """Raised right after a script's parser has parsed its command line."""

    def __init__(self, parser, namespace, extras):
        super().__init__("parsed")
        self.parser, self.namespace, self.extras = parser, namespace, extras


@contextlib.contextmanager
def stop_after_parsing():
    original = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = original(self, args, namespace)
        raise Stop(self, namespace, extras)

    argparse.ArgumentParser.parse_known_args = parse_known_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_known_args = original


def parse_failure(call):
    """None if `call()` parses (or prints --help), else argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            call()
        return None
    except SystemExit as e:
        if e.code in (0, None):
            return None
        return (err.getvalue().strip().splitlines() or [str(e.code)])[-1]


def train_options(argv):
    """(method name, options) of a train.py command line, as options.MonodepthOptions builds
    them (preset values as defaults, the method's own flags), without the checks that read
    files; raises SystemExit with argparse's message when a flag or value is refused."""
    from methods import method_class, resolve_method_name
    from options import RESUME_OVERRIDES, build_parser, check_preset, explicit_options, read_preset
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    pre.add_argument("--method")
    pre.add_argument("--resume", action="store_true")
    first, _ = pre.parse_known_args(argv)
    if first.resume:
        if first.config:
            raise SystemExit("--resume restores the run's own options: drop --config")
        name = first.method or "monodepth2"
        parser = build_parser(method_class(name))
        opt = parser.parse_args(argv)
        changed = sorted(explicit_options(parser, argv) - set(RESUME_OVERRIDES))
        if changed:
            raise SystemExit(f"--resume may not change {', '.join('--' + c for c in changed)}")
        return name, opt
    preset, path = read_preset(first.config) if first.config else ({}, None)
    name = resolve_method_name(first.method, preset, argv)
    parser = build_parser(method_class(name))
    if preset:
        parser.set_defaults(**check_preset(preset, path, parser, name))
    return name, parser.parse_args(argv)


def inference_parser(names):
    """A parser of the inference options (Method.inference_options) of these methods."""
    from methods import method_class
    from options import build_parser
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    seen = set()
    for name in names:
        cls = method_class(name)
        for action in build_parser(cls)._actions:
            if action.dest in cls.inference_options and action.dest not in seen:
                seen.add(action.dest)
                p._add_action(action)
    return p


def folder_methods(namespace):
    """The methods a command's --load_weights_folder may be: the method of the documented run
    that writes it, else every registered method (a placeholder such as W)."""
    from methods import METHODS, load_all_methods
    load_all_methods()
    folder = getattr(namespace, "load_weights_folder", None) or ""
    run = run_of_folder(folder)
    if run is not None and run in training_runs():
        return sorted({r["method"] for r in training_runs()[run]})
    return sorted(METHODS)


@functools.lru_cache(maxsize=None)
def script_entry(script):
    """The function that parses `script`'s command line, and whether it takes argv."""
    if script == "-m synthetic_world":
        from synthetic_world.generate import parse_args
        return parse_args, True
    path = os.path.join(ROOT, script)
    if script.startswith("benchmarks/"):
        spec = importlib.util.spec_from_file_location("docs_" + os.path.basename(script)[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(script[:-3])
    entry = getattr(module, "parse_args", None) or module.main
    return entry, bool(inspect.signature(entry).parameters)


def script_parse(command):
    """(argparse's message or None, the parsed Stop or None) of a script's command line."""
    entry, takes_argv = script_entry(command.script)
    saved_argv = sys.argv
    sys.argv = [command.script] + command.argv
    stop = None

    def run():
        nonlocal stop
        try:
            with stop_after_parsing():
                entry(command.argv) if takes_argv else entry()
        except Stop as s:
            stop = s
        return None

    try:
        failure = parse_failure(run)
    finally:
        sys.argv = saved_argv
    return failure, stop


def check_script(command):
    """None if the script's parser accepts the command, else the reason."""
    failure, stop = script_parse(command)
    if failure or stop is None:
        return failure
    extras = list(stop.extras)
    if command.script in ("evaluate_depth.py", "test_simple.py", "export_model.py") and extras:
        # a method's inference options (--eval_teacher, --single_frame, ...)
        parser = inference_parser(folder_methods(stop.namespace))
        return parse_failure(lambda: parser.parse_args(extras))
    if command.script == "benchmarks/train_throughput.py":
        for method in stop.namespace.methods or ["monodepth2"]:
            argv = ["--method"] + shlex.split(method) + extras
            failure = parse_failure(lambda: train_options(argv))
            if failure:
                return f"--methods {method!r}: {failure}"
        return None
    return f"unrecognized arguments: {' '.join(extras)}" if extras else None


def check(command):
    if command.script == "train.py":
        return parse_failure(lambda: train_options(command.argv))
    return check_script(command)


# ------------------------------------------------------------------ runs the documents train


def run_key(log_dir, name):
    return os.path.normpath(os.path.expanduser(log_dir)), name


def run_of_folder(folder):
    match = RUN_FOLDER.match(folder)
    return run_key(match["log_dir"], match["name"]) if match else None


@functools.lru_cache(maxsize=None)
def training_runs():
    """{(log_dir, model_name): [{method, num_epochs, keep_weights, where}]} of the documented
    training commands that start a run."""
    runs = {}
    for command in documented()[0]:
        if command.script == "quickstart.py":  # the quickstart's own run of its preset
            failure, stop = script_parse(command)
            if failure or stop is None:
                continue
            _, opt = train_options(["--config", "synthetic_quickstart", "--log_dir", stop.namespace.log_dir,
                                    "--num_epochs", str(stop.namespace.epochs)])
            runs.setdefault(run_key(opt.log_dir, opt.model_name), []).append(
                {"method": "monodepth2", "num_epochs": opt.num_epochs, "keep_weights": opt.keep_weights,
                 "where": command.where})
            continue
        if command.script != "train.py" or "--resume" in command.argv or "--help" in command.argv:
            continue
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                name, opt = train_options(command.argv)
        except SystemExit:
            continue  # reported by the parsing test
        runs.setdefault(run_key(opt.log_dir, opt.model_name), []).append(
            {"method": name, "num_epochs": opt.num_epochs, "keep_weights": opt.keep_weights, "where": command.where})
    return runs


def kept_epochs(run):
    """The weights_<epoch> folders a finished run keeps (save_frequency 1)."""
    last = run["num_epochs"] - 1
    first = 0 if run["keep_weights"] == 0 else max(0, last - run["keep_weights"] + 1)
    return set(range(first, last + 1))


# ------------------------------------------------------------------ tests


def _cases():
    cases = []
    for command in documented()[0]:
        marks = [pytest.mark.xfail(reason=KNOWN_CODE_BUGS[command.text], strict=True)] \
            if command.text in KNOWN_CODE_BUGS else []
        cases.append(pytest.param(command, id=f"{command.where}:{command.script}", marks=marks))
    return cases


@pytest.mark.parametrize("command", _cases())
def test_documented_command_parses(command):
    failure = check(command)
    assert failure is None, f"{command.where}: {command.text}\n  -> {failure}"


def test_every_bash_line_is_a_project_command_or_skipped_by_rule():
    commands, skipped, unknown = documented()
    assert not unknown, "bash lines that are neither project commands nor known other programs:\n" + "\n".join(unknown)
    assert {what for _, _, what in skipped} <= set(OTHER_PROGRAMS) | {f"python -m {m}" for m in OTHER_PYTHON_MODULES}


def test_the_documents_hold_every_counted_command():
    commands = documented()[0]
    assert len(commands) >= MIN_COMMANDS, f"{len(commands)} project commands, expected at least {MIN_COMMANDS}"
    scripts = {c.script for c in commands}
    for script in ("train.py", "evaluate_depth.py", "test_simple.py", "test_video.py", "export_gt_depth.py",
                   "precompute_depth_hints.py", "evaluate_pose.py", "quickstart.py", "import_reference_weights.py",
                   "prepare_cityscapes.py", "prepare_kitti_odom_depth.py", "-m synthetic_world"):
        assert script in scripts, f"no documented command runs {script}"


def test_resume_commands_continue_a_documented_run_of_their_document():
    """--resume finds a run by --log_dir and --model_name (default ~/tmp, mdp): each resume
    shown continues a training command of the same page."""
    resumes = [c for c in documented()[0] if c.script == "train.py" and "--resume" in c.argv]
    assert resumes, "no resume command documented"
    for command in resumes:
        _, opt = train_options(command.argv)
        runs = training_runs().get(run_key(opt.log_dir, opt.model_name), [])
        assert any(r["where"].split(":")[0] == command.doc for r in runs), \
            f"{command.where}: {command.text}\n  -> no training command of {command.doc} writes " \
            f"{opt.log_dir}/{opt.model_name}"


def test_weight_folders_are_ones_a_documented_run_writes_and_keeps():
    checked = 0
    for command in documented()[0]:
        for i, token in enumerate(command.argv[:-1]):
            if token not in WEIGHT_FOLDER_OPTIONS:
                continue
            folder = command.argv[i + 1]
            key = run_of_folder(folder)
            if key is None:
                continue  # a placeholder (W) or a folder that is not a run's
            runs = training_runs().get(key)
            assert runs, f"{command.where}: {token} {folder}: no documented training command writes this run"
            epoch = RUN_FOLDER.match(folder)["epoch"]
            if epoch is not None:
                assert any(int(epoch) in kept_epochs(r) for r in runs), \
                    f"{command.where}: {folder}: the run ({runs[0]['where']}) does not keep this folder " \
                    "(--num_epochs / --keep_weights)"
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("text", [
    "python train.py --no_such_flag",
    "python train.py --method srd --distill_filter bogus",
    "python train.py --config synthetic_mono --sync_bn sometimes",
    "python train.py --model_name m --resume --height 320",
    "python evaluate_depth.py --load_weights_folder W --eval_mono --no_such_flag",
    "python evaluate_depth.py --load_weights_folder runs/synthetic_mono/models/weights_7 --eval_teacher",
    "python test_simple.py --load_weights_folder W",
    "python -m synthetic_world --out x --no_such_flag",
    "python benchmarks/train_throughput.py --methods 'srd --distill_filter bogus'",
    "torchrun --nproc_per_node 2 train.py --allow_tf32 maybe",
])
def test_the_checker_refuses_unknown_flags_bad_choices_and_missing_options(text):
    (tokens,) = split_commands(text)
    kind, script, argv = classify(tokens)
    assert kind == "project"
    assert check(Command("test", 0, text, tokens[0], script, argv)) is not None


def anchors(path):
    """The anchors of a Markdown file: GitHub's heading slugs and <a id=...> names."""
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    found, counts, in_code = set(), {}, False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match and not in_code:
            slug = re.sub(r"[^\w\- ]", "", match[1].strip().lower()).replace(" ", "-")
            found.add(slug if slug not in counts else f"{slug}-{counts[slug]}")
            counts[slug] = counts.get(slug, 0) + 1
    found.update(re.findall(r'<a (?:id|name)="([^"]+)"', text))
    return found


def test_links_between_the_documents_resolve_to_files_and_headings():
    checked = 0
    for doc in DOCUMENTS:
        with open(os.path.join(ROOT, doc)) as f:
            text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
            assert os.path.exists(os.path.join(ROOT, path)), f"{doc}: link to {target}: no such file"
            if anchor:
                assert anchor in anchors(path), f"{doc}: link to {target}: no such heading in {path}"
            checked += 1
    assert checked >= 50
