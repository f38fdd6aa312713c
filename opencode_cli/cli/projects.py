"""``opencode projects`` (list, add, remove) and ``opencode files``."""

import os
from typing import TYPE_CHECKING, Annotated

import typer

from ._common import EXIT_ERROR, JsonOpt, UrlOpt, client

if TYPE_CHECKING:
    from opencode_cli import Client, Project

group = typer.Typer(help="List and register projects (no subcommand: list).")


@group.callback(invoke_without_command=True)
def _default(ctx: typer.Context, url: UrlOpt = None, json_: JsonOpt = False) -> None:
    if ctx.invoked_subcommand is None:
        list_projects(url=url, json_=json_)


@group.command("list")
def list_projects(url: UrlOpt = None, json_: JsonOpt = False) -> None:
    """List registered projects."""
    from ._output import print_json, table, when

    items = client(url).projects.list()
    if json_:
        print_json([p.raw for p in items])
        return
    table(
        ("ID", "NAME", "PATH", "CREATED"), [(p.id, p.name, p.path, when(p.created)) for p in items]
    )


@group.command()
def add(
    target: Annotated[
        str, typer.Argument(help="The project directory (or, with PATH, the name).")
    ] = ".",
    path: Annotated[
        str | None,
        typer.Argument(help="Directory, in the older `add NAME PATH` form.", show_default=False),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Project name [default: the directory's name].")
    ] = None,
    url: UrlOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Register a directory as a project: `opencode projects add [PATH] [--name NAME]`."""
    from ._common import usage_error
    from ._output import err, out, print_json

    if path is not None:
        if name is not None:
            raise usage_error("give the name either as --name or before the path, not both")
        name, directory = target, path
    else:
        directory = target
    real = os.path.realpath(directory)
    if not os.path.isdir(real):
        raise usage_error(f"not a directory: {directory}")
    name = name or os.path.basename(real) or real
    c = client(url)
    existing = next((p for p in c.projects.list() if p.path == real), None)
    project = existing or c.projects.create(name, real)
    if json_:
        print_json(project.raw)
        return
    out(project.id)
    if existing is not None:
        err(f"{real} is already registered as project {existing.name!r}")
    else:
        err(f"registered {real} as project {project.name!r}")


@group.command()
def remove(
    project_id: Annotated[str, typer.Argument(help="Project id.")], url: UrlOpt = None
) -> None:
    """Unregister a project (its files are untouched)."""
    client(url).projects.delete(project_id)


def files(
    path: Annotated[str | None, typer.Argument(help="Directory (or file with --cat).")] = None,
    project: Annotated[
        str | None,
        typer.Option(
            "--project", "-p", help="Project id [default: the one holding this directory]."
        ),
    ] = None,
    cat: Annotated[bool, typer.Option("--cat", help="Print the file's text instead.")] = False,
    url: UrlOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List a project directory (paths relative to the current directory)."""
    import sys

    from ._output import error, print_json, table

    c = client(url)
    if project:
        root: str | None = None
        relative = path
    else:
        found = _project_for(c, os.path.realpath(os.getcwd()))
        if found is None:
            error("this directory is in no project: pass --project or run `opencode projects add`")
            raise typer.Exit(EXIT_ERROR)
        project, root = found.id, found.path
        target = os.path.realpath(path or ".")
        relative = os.path.relpath(target, root) if root else path
        if relative == ".":
            relative = None
    if cat:
        if not relative:
            error("--cat needs a file path")
            raise typer.Exit(EXIT_ERROR)
        sys.stdout.write(c.files.read(project, relative))
        return
    entries = c.files.list(project, relative)
    if json_:
        print_json([e.raw for e in entries])
        return
    rows = [(e.name + ("/" if e.type == "directory" else ""), e.type, e.size) for e in entries]
    table(("NAME", "TYPE", "SIZE"), rows)


def _project_for(c: "Client", directory: str) -> "Project | None":
    """The registered project whose path is the deepest ancestor of ``directory``."""
    best = None
    for p in c.projects.list():
        if not p.path:
            continue
        root = os.path.realpath(p.path)
        inside = directory == root or directory.startswith(root.rstrip("/") + "/")
        if inside and (best is None or len(root) > len(os.path.realpath(best.path or ""))):
            best = p
    return best


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="projects")
    app.command()(files)
