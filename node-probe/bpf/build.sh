#!/usr/bin/env bash
# Compiles probe.bpf.c to probe.bpf.o (committed, so `cargo build` needs no clang).
# Usage: build.sh [OUTPUT]   (default: probe.bpf.o next to this script)
#
# Reproducible: the same source and clang give the same bytes wherever the
# checkout lives, because the build runs from this directory with relative
# paths and -fdebug-prefix-map rewrites the directory clang records in the
# debug info. Needs Debian packages: clang (14) and libbpf-dev (bpf/*.h).
# The object keeps its BTF (.BTF, .BTF.ext): the loader needs it for CO-RE
# relocations and for tp_btf. The DWARF sections (about 50 KB) are not
# stripped: the loader ignores them, and stripping would need llvm-strip too.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/probe.bpf.o}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$here"
clang -O2 -g -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 \
	-fdebug-prefix-map="$here"=. \
	-Wall -Werror \
	-c probe.bpf.c -o "$out"
