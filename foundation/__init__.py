"""The foundation every package stands on, importing nothing of the project: the error base
(``foundation.errors``) and the one registry type every plug-in kind uses
(``foundation.registry``)."""
