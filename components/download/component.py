"""KFP components: resolve sources (never cached) and download one source (cached)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import image

DATA_IMAGE = image("data")


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def resolve_sources(
    wikipedia_dump_date: str,
    cirrus_index_url: str,
    cc100_url: str,
    unidic_url: str,
    vibrato_dict_url: str = "",
) -> NamedTuple("Sources", wikipedia_dump_date=str, wikipedia_url=str, wikipedia_identity=str,
                cc100_url=str, cc100_identity=str, unidic_url=str, unidic_identity=str, vibrato_dict_url=str,
                vibrato_dict_identity=str):
    """Turns "latest" into a concrete dump and every source into URL + identity.

    Its outputs are plain values (URL + size/etag/checksum), so the download steps'
    cache keys change exactly when the data does. This step itself is never cached.
    """
    import json
    from collections import namedtuple

    from components.download.identity import identity_of
    from components.download.sources import resolve_sources as resolve
    s = resolve(wikipedia_dump_date=wikipedia_dump_date, cirrus_index_url=cirrus_index_url,
                cc100_url=cc100_url, unidic_url=unidic_url, vibrato_dict_url=vibrato_dict_url)
    print(json.dumps(s, indent=2, sort_keys=True))
    out = namedtuple("Sources", ["wikipedia_dump_date", "wikipedia_url", "wikipedia_identity", "cc100_url",
                                 "cc100_identity", "unidic_url", "unidic_identity", "vibrato_dict_url",
                                 "vibrato_dict_identity"])
    return out(s["wikipedia_dump_date"], s["wikipedia_url"], identity_of(s, "wikipedia"),
               s["cc100_url"], identity_of(s, "cc100"), s["unidic_url"], identity_of(s, "unidic"),
               s["vibrato_dict_url"], identity_of(s, "vibrato_dict"))


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def download_source(url: str, identity: str, extract_member: str, data: Output[Dataset]):
    """Downloads one source (verified against ``identity``) into the artifact's data root.

    ``extract_member`` (e.g. ``lex.csv``) pulls one file out of a .zip source. An empty ``url`` is an
    optional source this run does not use (``vibrato_dict_url``): an artifact listing no files.
    """
    from components import artifacts, storage
    from components.download.core import download, download_member
    from components.download.identity import verification_of

    if not url:
        print("download-source: no URL (an optional source this run does not use); nothing fetched")
        artifacts.write_manifest(data.path, {"source_url": "", "identity": identity, "files": []})
        return
    root = artifacts.data_root(data.uri, data.path)
    name = storage.basename(url)
    if extract_member and not name.endswith(extract_member):
        name = storage.basename(extract_member)
        result = download_member(url, extract_member, storage.join(root, name), **verification_of(identity))
    else:
        result = download(url, storage.join(root, name), **verification_of(identity))
    artifacts.write_manifest(data.path, {"source_url": url, "identity": identity, "files": [name],
                                         "size": result.get("size"), "sha256": result.get("sha256")})
    data.metadata.update({"source_url": url, "files": [name]})
