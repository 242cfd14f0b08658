"""Debian packages as a source of gettext catalogs: ``apt-get download`` (no install) and
``dpkg-deb -x`` into a cache, so a second build reads the unpacked trees without the network.

Layout of the cache: ``debs/<package>_<version>_<arch>.deb`` and ``root/<package>/`` (the unpacked
package, with a ``.unpacked`` marker written last). Where apt is missing or cannot download,
:func:`debian_roots` says so once and returns the packages it has, so the corpus is built from
Django's catalogs (and whatever is cached) alone.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

# Packages whose catalogs hold many translated one-line messages (environment.md lists them with
# their sentence counts); bash-doc and vim-common ship no .mo files in Debian 12.
DEBIAN_PACKAGES: tuple[str, ...] = ("git", "coreutils", "dpkg", "apt", "tar", "util-linux-locales", "gnupg-l10n",
                                    "e2fsprogs-l10n", "wget", "vim-common", "bash-doc")
UNPACKED = ".unpacked"


def _run(cmd: list[str], cwd: str | None = None) -> str:
    """Run a command; return "" on success, else its last stderr line."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    if proc.returncode == 0:
        return ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {proc.returncode}"


def _download(packages: list[str], debs: str) -> str:
    """``apt-get download`` the packages that have no .deb in ``debs`` yet; "" or why it failed.
    An empty or stale package list gets one ``apt-get update`` and a retry."""
    missing = [p for p in packages if not glob.glob(os.path.join(debs, f"{p}_*.deb"))]
    if not missing:
        return ""
    error = _run(["apt-get", "download", *missing], cwd=debs)
    if error:
        update_error = _run(["apt-get", "update", "-qq"])
        error = update_error or _run(["apt-get", "download", *missing], cwd=debs)
    return error


def debian_roots(cache: str, packages: tuple[str, ...] | list[str] = DEBIAN_PACKAGES) -> list[tuple[str, str]]:
    """``(package, unpacked root)`` for each of ``packages`` that is (or can now be) unpacked under
    ``cache``, in the order given. Prints one line naming what is missing and why when apt is
    unavailable or a download fails."""
    root_dir, debs = os.path.join(cache, "root"), os.path.join(cache, "debs")
    todo = [p for p in packages if not os.path.isfile(os.path.join(root_dir, p, UNPACKED))]
    problem = ""
    if todo:
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            problem = "apt-get/dpkg-deb not found"
        else:
            os.makedirs(debs, exist_ok=True)
            problem = _download(todo, debs)
            for package in todo:
                found = sorted(glob.glob(os.path.join(debs, f"{package}_*.deb")))
                if not found:
                    continue
                target = os.path.join(root_dir, package)
                shutil.rmtree(target, ignore_errors=True)
                os.makedirs(target)
                error = _run(["dpkg-deb", "-x", found[-1], target])
                if error:
                    problem = problem or f"dpkg-deb -x {found[-1]}: {error}"
                    continue
                open(os.path.join(target, UNPACKED), "w").close()
    have = [(p, os.path.join(root_dir, p)) for p in packages if os.path.isfile(os.path.join(root_dir, p, UNPACKED))]
    if len(have) < len(packages):
        lacking = [p for p in packages if p not in dict(have)]
        print(f"note: Debian catalogs unavailable for {', '.join(lacking)} ({problem or 'not fetched'}); "
              f"building the text from Django's catalogs{' and ' + ', '.join(dict(have)) if have else ''} only")
    return have
