#!/usr/bin/env python3
"""Checks that the Dockerfiles build and ship binaries that exist, and that they make the images
the manifests pull.

Without a container engine nothing builds the images here, so a renamed binary or component
would only show up in a registry pipeline. This check catches that in under a second:

1. every binary a Dockerfile names (`cargo build --bin X`, `target/release/X`, a copied or
   `ENTRYPOINT` binary `mizzen-*`) is a binary of the Cargo workspace (a `[[bin]]`, a package's
   `src/main.rs`, or `src/bin/*.rs`);
2. every image in manifests/*.yaml (`image:` and the webhook's `--proxy-image`), named
   `<hub>/mizzen-<component>:<tag>`, has a Dockerfile target `<component>` whose entrypoint is
   `mizzen-<component>`; so has every Mizzen image of the kind e2e suite's e2e/manifests/*.yaml
   (the demo app; the third-party images it also runs, such as curl, are not ours to build);
3. `.dockerignore` keeps cargo's `target/` out of the build context.

Usage: scripts/check-dockerfiles.py [DOCKERFILE...]   (default: images/Dockerfile)
Exits 1 and names each problem when one is found.
"""

import glob
import json
import os
import re
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def workspace_binaries(root):
    """Names of every binary target of the workspace's members."""
    with open(os.path.join(root, "Cargo.toml"), "rb") as f:
        members = tomllib.load(f)["workspace"]["members"]
    binaries = set()
    for member in members:
        crate = os.path.join(root, member)
        with open(os.path.join(crate, "Cargo.toml"), "rb") as f:
            manifest = tomllib.load(f)
        explicit = manifest.get("bin", [])
        binaries.update(b["name"] for b in explicit)
        package = manifest.get("package", {})
        if package.get("autobins", True):
            paths = {os.path.normpath(b.get("path", "")) for b in explicit}
            if os.path.isfile(os.path.join(crate, "src/main.rs")) and "src/main.rs" not in paths:
                binaries.add(package["name"])
            for path in glob.glob(os.path.join(crate, "src/bin/*.rs")):
                binaries.add(os.path.splitext(os.path.basename(path))[0])
    return binaries


def instructions(text):
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined and
    comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def stages(text):
    """Per stage (named by its `AS` name, or its index): the binaries it refers to and the
    binary its ENTRYPOINT runs."""
    result, name = {}, None
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            match = re.search(r"\s+AS\s+(\S+)\s*$", rest, re.IGNORECASE)
            name = match.group(1) if match else str(len(result))
            result[name] = {"binaries": set(), "entrypoint": None}
            continue
        if name is None:
            continue
        stage = result[name]
        stage["binaries"].update(re.findall(r"--bin[ =]([A-Za-z0-9_-]+)", rest))
        stage["binaries"].update(re.findall(r"target/[a-z0-9_-]+/([A-Za-z0-9_-]+)", rest))
        if keyword == "COPY":
            stage["binaries"].update(re.findall(r"/(mizzen[A-Za-z0-9_-]*)\b", rest))
        if keyword == "ENTRYPOINT":
            try:
                argv = json.loads(rest)
            except json.JSONDecodeError:
                argv = rest.split()
            stage["entrypoint"] = os.path.basename(argv[0]) if argv else None
            if stage["entrypoint"]:
                stage["binaries"].add(stage["entrypoint"])
    return result


def manifest_images(root):
    """(file, component) for every Mizzen image the manifests pull."""
    found = []
    install = sorted(glob.glob(os.path.join(root, "manifests/*.yaml")))
    e2e = sorted(glob.glob(os.path.join(root, "e2e/manifests/*.yaml")))
    for path in install + e2e:
        with open(path) as f:
            text = f.read()
        refs = re.findall(r'^\s*image:\s*"?([^"\s]+)"?', text, re.MULTILINE)
        refs += re.findall(r'--proxy-image\s*\n\s*-\s*"?([^"\s]+)"?', text)
        if path in e2e:
            refs = [ref for ref in refs if "mizzen-" in ref]
        for ref in refs:
            match = re.fullmatch(r"(?:.+/)?mizzen-([a-z0-9-]+):[A-Za-z0-9._-]+", ref)
            found.append((os.path.relpath(path, root), ref, match.group(1) if match else None))
    return found


def check(root, dockerfiles):
    problems = []
    binaries = workspace_binaries(root)
    targets = {}
    for dockerfile in dockerfiles:
        rel = os.path.relpath(dockerfile, root)
        with open(dockerfile) as f:
            parsed = stages(f.read())
        for stage_name, stage in parsed.items():
            for binary in sorted(stage["binaries"] - binaries):
                problems.append(
                    f"{rel}: stage {stage_name} names binary {binary!r}, which no workspace "
                    f"crate builds (workspace binaries: {', '.join(sorted(binaries))})"
                )
            targets.setdefault(stage_name, (rel, stage))
    images = manifest_images(root)
    if not images:
        problems.append("manifests/*.yaml: no Mizzen image found; is the install rendered?")
    for path, ref, component in images:
        if component is None:
            problems.append(f"{path}: image {ref} is not named <hub>/mizzen-<component>:<tag>")
            continue
        if component not in targets:
            problems.append(
                f"{path}: image {ref} has no Dockerfile target {component!r} "
                f"(targets: {', '.join(sorted(targets))})"
            )
            continue
        rel, stage = targets[component]
        if stage["entrypoint"] != f"mizzen-{component}":
            problems.append(
                f"{rel}: target {component} (image {ref}) runs {stage['entrypoint']!r}, "
                f"expected mizzen-{component}"
            )
    ignore = os.path.join(root, ".dockerignore")
    patterns = open(ignore).read().split() if os.path.isfile(ignore) else []
    if not {"target", "target/", "/target", "/target/"} & set(patterns):
        problems.append(".dockerignore does not exclude target/ (gigabytes in the build context)")
    return problems, len(images), len(targets)


def main(argv):
    dockerfiles = argv[1:] or [os.path.join(ROOT, "images/Dockerfile")]
    missing = [d for d in dockerfiles if not os.path.isfile(d)]
    if missing:
        print(f"FAIL: no such Dockerfile: {', '.join(missing)}", file=sys.stderr)
        return 1
    problems, images, targets = check(ROOT, dockerfiles)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"OK: {len(dockerfiles)} Dockerfile(s), {targets} stages: every binary is a workspace "
        f"binary; the {images} image references in manifests/ and e2e/manifests/ each have "
        f"their target"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
