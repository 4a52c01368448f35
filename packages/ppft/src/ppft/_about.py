"""The texts ppft 1.7 exposed at the package top: `copyright`, `license()` and `citation()`.

This module only holds text; it must never import the rest of ppft (the texts are needed by `--help`
lines and must cost nothing).
"""

from __future__ import annotations

import sys

from .version import __version__

__all__ = ["CITATION", "LICENSE", "citation", "copyright", "license"]

copyright = """Copyright (c) the ppft developers.
ppft 2 re-implements the API of Parallel Python (pp, Copyright (c) 2005-2012 Vitalii Vanovschi) and of its
fork ppft 1.x (Copyright (c) 2015-2016 California Institute of Technology, Copyright (c) 2016-2026 The
Uncertainty Quantification Foundation), with code of its own."""

LICENSE = f"""ppft {__version__}
{copyright}
All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are permitted provided
that the following conditions are met:

    - Redistributions of source code must retain the above copyright notice, this list of conditions and
      the following disclaimer.

    - Redistributions in binary form must reproduce the above copyright notice, this list of conditions
      and the following disclaimer in the documentation and/or other materials provided with the
      distribution.

    - Neither the names of the copyright holders nor the names of any of the contributors may be used to
      endorse or promote products derived from this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED
WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A
PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT OWNER OR CONTRIBUTORS BE LIABLE FOR ANY
DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO,
PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION)
HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING
NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE
POSSIBILITY OF SUCH DAMAGE.
"""

CITATION = """If you use ppft to do research that leads to publication, please acknowledge the work ppft
re-implements by citing:

    M.M. McKerns, L. Strand, T. Sullivan, A. Fang, M.A.G. Aivazis,
    "Building a framework for predictive science", Proceedings of
    the 10th Python in Science Conference, 2011;
    http://arxiv.org/pdf/1202.1056

    Michael McKerns and Michael Aivazis,
    "pathos: a framework for heterogeneous computing", 2010- ;
    https://uqfoundation.github.io/project/pathos
"""


def license() -> str:
    """Print ppft's license, as ppft 1.7's `ppft.license()` does; also return it."""
    sys.stdout.write(LICENSE)
    return LICENSE


def citation() -> str:
    """Print how to cite ppft in a publication, as ppft 1.7's `ppft.citation()` does; also return it."""
    sys.stdout.write(CITATION)
    return CITATION
