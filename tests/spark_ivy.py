"""Spark's Ivy settings for the tests that fetch hadoop-aws with --packages.

Spark's default resolver chain tries the local Maven repository (~/.m2)
before Maven Central. A ~/.m2 that holds a POM without its jar (what
`mvn dependency:get` of a POM, or an interrupted build, leaves) makes that
chain fail with "download failed: ...hadoop-aws.jar", whatever Central has.
The tests resolve from Maven Central alone, into the cache dir, so the first
run downloads the jars (about 700 MB, most of it the AWS SDK bundle) and the
later ones read them from there.
"""

import os

CENTRAL = "https://repo1.maven.org/maven2/"


def settings(ivy_dir):
    """Write IVY_DIR/ivysettings.xml (Maven Central only, cache in IVY_DIR/cache)
    and return its path, for spark.jars.ivySettings."""
    os.makedirs(ivy_dir, exist_ok=True)
    path = os.path.join(ivy_dir, "ivysettings.xml")
    with open(path, "w") as f:
        f.write(f"""<ivysettings>
  <settings defaultResolver="central"/>
  <caches defaultCacheDir="{os.path.join(ivy_dir, 'cache')}"/>
  <resolvers>
    <ibiblio name="central" m2compatible="true" root="{CENTRAL}"/>
  </resolvers>
</ivysettings>
""")
    return path
