"""Apache Kafka, one KRaft node (broker and controller), from Maven Central's jars.

The jars come from ``mvn dependency:copy-dependencies`` over the pom beside this file,
cached under ``~/.cache/replaywatch/``; an unpacked distribution in ``KAFKA_HOME`` is
used instead when set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import uuid
from importlib import resources
from pathlib import Path

from replaywatch.devstack import process
from replaywatch.exceptions import DevstackError

KAFKA_VERSION = "4.1.1"
PROBE_TOPIC = "__replaywatch_devstack_probe"


def cache_dir() -> Path:
    return process.cache_dir(f"kafka-{KAFKA_VERSION}")


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise DevstackError(
            "Java 17+ is needed to run Kafka and was not found; install it "
            "(apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(m.group(1)) if m else 0
    if major == 1 and m and m.group(2):
        major = int(m.group(2))
    if major < 17:
        raise DevstackError(f"Kafka {KAFKA_VERSION} needs Java 17+, found Java {major} at {java}; set JAVA_HOME")
    return java


def classpath() -> str:
    """The broker's classpath: KAFKA_HOME/libs, or jars resolved with Maven once."""
    home = os.environ.get("KAFKA_HOME")
    if home:
        libs = Path(home) / "libs"
        if not any(libs.glob("kafka_*.jar")):
            raise DevstackError(f"KAFKA_HOME={home} has no libs/kafka_*.jar; point it at an unpacked Kafka")
        return f"{libs}/*"
    libs = cache_dir() / "libs"
    if not (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        mvn = shutil.which("mvn")
        if not mvn:
            raise DevstackError(
                "Maven (mvn) is needed to fetch Kafka's jars and was not found; install it "
                "(apt-get install maven) or set KAFKA_HOME to an unpacked Kafka"
            )
        pom = resources.files("replaywatch.devstack") / "kafka-pom.xml"
        tmp = libs.with_name("libs.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with resources.as_file(pom) as pom_path:
            res = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(pom_path),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={tmp}",
                    "-DincludeScope=runtime",
                ],
                capture_output=True,
                text=True,
            )
        if res.returncode != 0:
            last = (res.stdout + res.stderr).strip().splitlines()[-1:] or ["(no output)"]
            raise DevstackError(f"mvn could not resolve Kafka {KAFKA_VERSION}'s jars: {last[0]}")
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
    return f"{libs}/*"


SASL_USERNAME = "replaywatch"
SASL_PASSWORD = "replaywatch-local-sasl-secret"
"""The user of the SASL listener, created at start (SCRAM-SHA-256 and -512, and PLAIN)."""


def _properties(data: Path, port: int, controller_port: int, sasl_port: int) -> str:
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    plain = f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USERNAME}="{SASL_PASSWORD}";'
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
inter.broker.listener.name=PLAINTEXT
# a SASL listener for the tests of production security: SCRAM users are created when the
# storage is formatted; PLAIN's user is in its JAAS line
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config={scram}
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram}
listener.name.sasl_plaintext.plain.sasl.jaas.config={plain}
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# ACLs are enforced, and none exist: everyone may do everything until a test denies
# something (the permanent-error tests deny a topic or group to see a clean stop).
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
"""


class Kafka:
    name = "kafka"

    def __init__(self, root: Path, port: int, controller_port: int, sasl_port: int) -> None:
        self.dir = root / "kafka"
        self.port = port
        self.controller_port = controller_port
        self.sasl_port = sasl_port
        self.config = self.dir / "server.properties"
        self.log = self.dir / "kafka.log"

    @property
    def marker(self) -> str:
        return str(self.config)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    def start(self) -> int:
        java = java_binary()
        cp = classpath()
        for p, what in (
            (self.port, "Kafka"),
            (self.controller_port, "Kafka controller"),
            (self.sasl_port, "Kafka SASL"),
        ):
            process.ensure_bindable(p, what)
        data = self.dir / "data"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(_properties(data, self.port, self.controller_port, self.sasl_port))
        log4j = resources.files("replaywatch.devstack") / "log4j2.properties"
        log4j_path = self.dir / "log4j2.properties"
        log4j_path.write_text(log4j.read_text())
        jvm = [
            java,
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            # C1 only: on 2 cores, C2's compiler thread took 23 s of CPU over a benchmark and
            # competed with everything else; with C1 the broker used 0.043 instead of 0.068
            # CPU s per 1,000 events, and the latency run after it p99 312 instead of 830 ms.
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j_path}",
            "-cp",
            cp,
        ]
        if not (data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            res = subprocess.run(
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(self.config),
                    *(
                        arg
                        for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512")
                        for arg in ("--add-scram", f"{mech}=[name={SASL_USERNAME},password={SASL_PASSWORD}]")
                    ),
                ],
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                raise DevstackError(f"Kafka storage format failed: {res.stdout.strip()} {res.stderr.strip()}")
        return process.spawn([*jvm, "kafka.Kafka", str(self.config)], self.log)

    def wait_ready(self, pid: int, timeout: float = 90.0) -> None:
        def ready() -> None:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
            asyncio.run(probe(self.bootstrap))

        process.wait_ready(pid, self.marker, self.log, "Kafka", ready, timeout=timeout, pause=0.5)


async def probe(bootstrap: str) -> None:
    """Ready means: a metadata request, then a produce/consume round trip."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "not ready yet" is expected here
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        topics = await admin.list_topics()
        if PROBE_TOPIC not in topics:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(PROBE_TOPIC, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await producer.start()
    try:
        token = uuid.uuid4().bytes
        meta = await producer.send_and_wait(PROBE_TOPIC, token, partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(PROBE_TOPIC, 0)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=5000), 10)
        if not any(m.value == token for m in batch.get(tp, [])):
            raise RuntimeError("probe record not read back")
    finally:
        await consumer.stop()
