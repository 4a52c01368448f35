"""ssh nodes: any machine you can ssh into, as a node (`ppservers=("ssh://[user@]host[:port]",)`).

    entries  `ssh://` entries read into `SshTarget`s, and the ssh command line that reaches one (no I/O)
    channel  `SshChannel`: one ssh process carrying one connection, driven by the client's loop
    failures `explain`: why a channel failed, from ssh's exit status and message (no I/O)
    node     `SshNode`: the `RemoteNode` over an `SshChannel`; `add_ssh_nodes` puts them in a scheduler

The remote side is `ppft_worker.stdio` (`python -m ppft_worker --stdio`); the preamble both send before the
protocol is `ppft_worker.stdio.preamble` (docs/protocol.md, "The stdio transport"). Imports go one way:
node -> channel, failures -> entries; nothing here imports the scheduler or the Server. `Server` imports this
package only when an ssh node is used, so `import ppft` pays nothing for it.
"""

from .entries import check_ssh_prefix, parse_ssh_entry, split_ssh_entries, ssh_program_problem
from .node import SshNode, add_ssh_nodes

__all__ = [
    "SshNode",
    "add_ssh_nodes",
    "check_ssh_prefix",
    "parse_ssh_entry",
    "split_ssh_entries",
    "ssh_program_problem",
]
