"""alknet-firewall: screens untrusted text for attacks on LLMs.

The light parts (schema, config, sources) import without torch; `Firewall` pulls in the
model stack on first use so that producers never load torch.
"""

from alknet_firewall.schema import Alarm, Decision, Document, Verdict

__all__ = ["Alarm", "Decision", "Document", "Firewall", "Verdict"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "Firewall":
        from alknet_firewall.firewall import Firewall

        return Firewall
    raise AttributeError(name)
