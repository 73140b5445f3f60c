{{/* Names. */}}
{{- define "tern.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tern.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A component's resource name: (dict "root" $ "component" "smtp"). */}}
{{- define "tern.componentName" -}}
{{- printf "%s-%s" (include "tern.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "tern.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tern.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tern.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tern.labels" -}}
helm.sh/chart: {{ include "tern.chart" .root }}
{{ include "tern.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: tern
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* An image reference: (dict "root" $ "image" .Values.natsTrial.image "tag" "default tag").
The image's registry, else image.registry, goes in front of its repository; a digest wins
over the tag. */}}
{{- define "tern.imageRef" -}}
{{- $img := .image }}
{{- $registry := default .root.Values.image.registry $img.registry | trimSuffix "/" }}
{{- $repo := $img.repository }}
{{- if $registry }}{{ $repo = printf "%s/%s" $registry $repo }}{{ end }}
{{- if $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo (toString (default .tag $img.tag)) }}
{{- end }}
{{- end }}

{{/* The tern image (tern and tern-operator). */}}
{{- define "tern.image" -}}
{{- include "tern.imageRef" (dict "root" . "image" .Values.image "tag" .Chart.AppVersion) }}
{{- end }}

{{- define "tern.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tern.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tern.tlsSecretName" -}}
{{- if .Values.tls.secretName }}
{{- .Values.tls.secretName }}
{{- else if .Values.tls.certManager.enabled }}
{{- printf "%s-tls" (include "tern.fullname" .) }}
{{- end }}
{{- end }}

{{/* The mailbox runs as a StatefulSet with a volume exactly when its metadata is embedded. */}}
{{- define "tern.mailboxReplicas" -}}
{{- if eq .Values.store.mode "embedded" }}1{{ else }}{{ .Values.mailbox.replicaCount }}{{ end }}
{{- end }}

{{/* The mailbox's headless Service: every ready pod's address, for client-side balancing. */}}
{{- define "tern.mailboxHeadlessName" -}}
{{- printf "%s-headless" (include "tern.componentName" (dict "root" . "component" "mailbox")) }}
{{- end }}

{{/* Where every client (front-ends, relay, operator) reaches the mailbox: its headless
Service, over TLS with internal TLS. */}}
{{- define "tern.mailboxUrl" -}}
{{- printf "%s://%s:%d" (ternary "https" "http" .Values.tls.internal.enabled) (include "tern.mailboxHeadlessName" .) (int .Values.containerPorts.grpc) }}
{{- end }}

{{/* Internal mutual TLS: the Secret with ca.crt, tls.crt and tls.key every part mounts. */}}
{{- define "tern.internalTlsSecretName" -}}
{{- default (printf "%s-internal-tls" (include "tern.fullname" .)) .Values.tls.internal.existingSecret }}
{{- end }}

{{- define "tern.internalTlsDir" -}}/etc/tern/internal{{- end }}

{{/* The container's volumeMount and the pod's volume for internal TLS (when it is on). The
Secret is mounted without subPath, so the kubelet updates the files when it changes. */}}
{{- define "tern.internalTlsMount" -}}
- name: internal-tls
  mountPath: {{ include "tern.internalTlsDir" . }}
  readOnly: true
{{- end }}

{{- define "tern.internalTlsVolume" -}}
- name: internal-tls
  secret:
    secretName: {{ include "tern.internalTlsSecretName" . }}
    defaultMode: 0440
    items:
      - {key: ca.crt, path: ca.crt}
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
{{- end }}

{{/* The Admin API token's Secret (key token), given to the mailbox, the operator and the import
Job only. */}}
{{- define "tern.adminSecretName" -}}
{{- default (printf "%s-admin" (include "tern.fullname" .)) .Values.admin.existingSecret }}
{{- end }}

{{/* The trial NATS server's token Secret (key token). */}}
{{- define "tern.natsTrialSecretName" -}}
{{- printf "%s-auth" (include "tern.componentName" (dict "root" . "component" "nats")) }}
{{- end }}

{{/* A generated Secret value that survives upgrades, base64-encoded as Secret data wants it:
the one already in the cluster when there is one (lookup), a random one otherwise (first
install, helm template): (dict "root" $ "name" "secret-name" "key" "token"). */}}
{{- define "tern.keptSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- $data := dict }}
{{- if $existing }}{{ $data = default (dict) $existing.data }}{{ end }}
{{- if get $data .key }}
{{- get $data .key }}
{{- else }}
{{- randAlphaNum 48 | b64enc }}
{{- end }}
{{- end }}

{{/* The NATS servers' URLs, as a JSON list: store.nats.servers, or store.nats.url (which may
itself be a comma-separated list). */}}
{{- define "tern.natsServers" -}}
{{- $n := .Values.store.nats }}
{{- $urls := list }}
{{- range (default (list $n.url) $n.servers) }}
{{- range (splitList "," .) }}
{{- if trim . }}{{ $urls = append $urls (trim .) }}{{ end }}
{{- end }}
{{- end }}
{{- toJson $urls }}
{{- end }}

{{- define "tern.natsDir" -}}/etc/tern/nats{{- end }}

{{/* Whether the mailbox mounts NATS files (an NKey seed, a .creds file, a CA or a client
certificate): "true" or empty. */}}
{{- define "tern.natsFiles" -}}
{{- $n := .Values.store.nats }}
{{- if and (eq .Values.store.mode "nats") (or (has $n.auth.type (list "nkey" "credentials")) (and $n.tls.enabled $n.tls.existingSecret)) }}true{{ end }}
{{- end }}

{{/* "true" when the IMAP pods serve the discovery documents and the MTA-STS policy. */}}
{{- define "tern.discoveryOn" -}}
{{- if and .Values.discovery.enabled .Values.imap.enabled }}true{{ end }}
{{- end }}

{{/* The MX patterns of the MTA-STS policy, as a JSON list: the front-ends serve them
([discovery] mta_sts_mx) and the operator derives the policy's id from them, so both take them
from here. */}}
{{- define "tern.mtaStsMx" -}}
{{- .Values.discovery.mtaSts.mx | default (list .Values.hostname) | toJson }}
{{- end }}

{{/* The public port of a front-end's listener for the DNS records and the discovery
documents: its Service port, or 0 when the front-end is off. (dict "root" . "component" "imap"
"port" "imaps") */}}
{{- define "tern.publicPort" -}}
{{- $c := index .root.Values .component }}
{{- if $c.enabled }}{{ index $c.service.ports .port | int }}{{ else }}0{{ end }}
{{- end }}

{{/* host:port for a listener, with brackets around an IPv6 host. */}}
{{- define "tern.addr" -}}
{{- $host := .root.Values.listenAddress }}
{{- if contains ":" $host }}{{ $host = printf "[%s]" $host }}{{ end }}
{{- printf "%s:%d" $host (int .port) }}
{{- end }}

{{/* One TOML value: integers stay integers (Helm reads YAML numbers as floats); a map becomes
an inline table with quoted keys, since keys such as domain names contain dots. */}}
{{- define "tern.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ ternary "true" "false" . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}{{ if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "slice" . }}[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "tern.tomlValue" $v }}{{ end }}]
{{- else if kindIs "map" . }}{{ $m := . }}{ {{- range $i, $k := keys $m | sortAlpha }}{{ if $i }},{{ end }} {{ toJson $k }} = {{ include "tern.tomlValue" (get $m $k) }}{{ end }} }
{{- else }}{{ fail (printf "tern: cannot write %v (%s) into the TOML config" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/* A TOML table from a dict, keys sorted, null values left out: (list "name" $dict). */}}
{{- define "tern.tomlTable" -}}
{{- $name := index . 0 }}
{{- $table := index . 1 -}}
[{{ $name }}]
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if not (kindIs "invalid" $v) }}
{{ $k }} = {{ include "tern.tomlValue" $v }}
{{- end }}
{{- end }}
{{- end }}

{{/* How many pods a workload may run: (dict "root" $ "c" .Values.smtp), the autoscaler's
maximum when it has one. The mailbox has its own count (tern.mailboxReplicas). */}}
{{- define "tern.maxReplicas" -}}
{{- if and (hasKey .c "autoscaling") .c.autoscaling.enabled }}{{ int .c.autoscaling.maxReplicas }}{{ else }}{{ int .c.replicaCount }}{{ end }}
{{- end }}

{{/* The workload's topologySpreadConstraints: its own, else topologySpread's soft ones when
it may run more than one pod: (dict "root" $ "c" .Values.smtp "component" "smtp" "replicas" 2). */}}
{{- define "tern.topologySpread" -}}
{{- $ts := .root.Values.topologySpread }}
{{- if .c.topologySpreadConstraints }}
{{- toYaml .c.topologySpreadConstraints }}
{{- else if and $ts.enabled (gt (int .replicas) 1) }}
{{- range $ts.topologyKeys }}
- maxSkew: {{ int $ts.maxSkew }}
  topologyKey: {{ . }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "tern.selectorLabels" (dict "root" $.root "component" $.component) | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Refuses a store.mode switch on an existing release: (dict "root" $ "name" "tern-mailbox"
"kind" "StatefulSet" "existing" (lookup of the other kind)). existing is what lookup found of
the workload kind the other store.mode renders, under the same name in the release
namespace: empty on a first install, under helm template and when nothing is there. */}}
{{- define "tern.mailboxModeGuard" -}}
{{- if and .existing (not .root.Values.store.allowModeSwitch) }}
{{- $other := ternary "Deployment" "StatefulSet" (eq .kind "StatefulSet") }}
{{- $was := ternary "nats" "embedded" (eq .kind "StatefulSet") }}
{{- $where := ternary (printf "on its volume (the PersistentVolumeClaim data-%s-0, which is kept)" .name) "in NATS JetStream and S3" (eq $was "embedded") }}
{{- fail (printf "refusing to switch store.mode: store.mode %s runs the mailbox as a %s, but %s %s/%s exists (store.mode %s). Switching moves no data: the new mailbox would start empty while the old one's mail stays %s, and Tern cannot export and import between stores yet. To try the other mode, install a new release under another name. To give up the old data, delete the old %s deliberately (kubectl -n %s delete %s %s) or set store.allowModeSwitch=true, then upgrade." .root.Values.store.mode .kind $other .root.Release.Namespace .name $was $where $other .root.Release.Namespace (lower $other) .name) }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every workload: (dict "root" $ "c" .Values.smtp "component"
"smtp" "replicas" 2). */}}
{{- define "tern.podScheduling" -}}
{{- $root := .root }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with (default $root.Values.nodeSelector .c.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.tolerations .c.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.affinity .c.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "tern.topologySpread" . }}
topologySpreadConstraints:
  {{- . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Environment shared by every tern container. */}}
{{- define "tern.env" -}}
- name: RUST_LOG
  value: {{ .root.Values.logLevel | quote }}
- name: TERN_CONFIG
  value: /etc/tern/config/config.toml
{{- with .root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .c.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "tern.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end }}

{{/* terminationGracePeriodSeconds and the preStop hook of a front-end: (dict "root" $ "c" .Values.smtp). */}}
{{- define "tern.preStop" -}}
{{- if gt (int .root.Values.shutdown.preStopSleepSecs) 0 }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int .root.Values.shutdown.preStopSleepSecs }}
{{- end }}
{{- end }}

{{- define "tern.terminationGrace" -}}
{{- add (int .root.Values.shutdown.preStopSleepSecs) (int (default 25 .c.shutdownGraceSecs)) 5 }}
{{- end }}

{{/* The relay's terminationGracePeriodSeconds: the [smtp] shutdown_grace_secs it drains within
(smtp.config may override smtp.shutdownGraceSecs in the file, so the same precedence here), plus
the margin the front-ends get. */}}
{{- define "tern.relayTerminationGrace" -}}
{{- $smtp := .Values.smtp }}
{{- $grace := $smtp.shutdownGraceSecs }}
{{- if hasKey $smtp.config "shutdown_grace_secs" }}{{ $grace = get $smtp.config "shutdown_grace_secs" }}{{ end }}
{{- add (int (default 25 $grace)) 5 }}
{{- end }}

{{/* The checksum that restarts pods when the configuration changes. */}}
{{- define "tern.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{/* ipFamilyPolicy and ipFamilies of a Service, when set: a service.* values map. */}}
{{- define "tern.ipFamilies" -}}
{{- with .ipFamilyPolicy }}
ipFamilyPolicy: {{ . }}
{{- end }}
{{- with .ipFamilies }}
ipFamilies:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The type-dependent part of a mail Service's spec, from a service.* values map: type,
externalTrafficPolicy, loadBalancerClass, loadBalancerSourceRanges, the IP families. No
loadBalancerIP (deprecated): providers that take a fixed address take it by annotation. */}}
{{- define "tern.mailServiceSpec" -}}
type: {{ .type }}
{{- if has .type (list "LoadBalancer" "NodePort") }}
externalTrafficPolicy: {{ default "Cluster" .externalTrafficPolicy }}
{{- end }}
{{- if eq .type "LoadBalancer" }}
{{- with .loadBalancerClass }}
loadBalancerClass: {{ . }}
{{- end }}
{{- with .loadBalancerSourceRanges }}
loadBalancerSourceRanges:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- include "tern.ipFamilies" . }}
{{- end }}

{{/* Spam filtering with rspamd (spam.*). The chart's rspamd and its Redis, when
spam.rspamd.deploy. */}}
{{- define "tern.rspamdName" -}}
{{- include "tern.componentName" (dict "root" . "component" "rspamd") }}
{{- end }}

{{- define "tern.rspamdRedisName" -}}
{{- include "tern.componentName" (dict "root" . "component" "rspamd-redis") }}
{{- end }}

{{/* Ports of the chart's rspamd (the image's): the normal worker (scans) and the controller
(learning, the web interface), and of its Redis. */}}
{{- define "tern.rspamdNormalPort" -}}11333{{- end }}
{{- define "tern.rspamdControllerPort" -}}11334{{- end }}
{{- define "tern.rspamdRedisPort" -}}6379{{- end }}

{{/* Whether the chart runs rspamd and its Redis: "true" or empty. */}}
{{- define "tern.rspamdDeployed" -}}
{{- if and .Values.spam.enabled .Values.spam.rspamd.deploy }}true{{ end }}
{{- end }}

{{/* The Secret with the controller's (and, deployed, Redis's) password: the existing one, or
the one the chart generates for its rspamd; empty for an external rspamd without one. */}}
{{- define "tern.rspamdSecretName" -}}
{{- $r := .Values.spam.rspamd }}
{{- if $r.existingSecret }}{{ $r.existingSecret }}
{{- else if $r.deploy }}{{ printf "%s-rspamd" (include "tern.fullname" .) }}
{{- end }}
{{- end }}

{{/* [spam] rspamd_url: the normal worker the SMTP front-end has scan every message. */}}
{{- define "tern.rspamdUrl" -}}
{{- if .Values.spam.rspamd.deploy }}
{{- printf "http://%s:%s" (include "tern.rspamdName" .) (include "tern.rspamdNormalPort" .) }}
{{- else }}
{{- .Values.spam.rspamd.url }}
{{- end }}
{{- end }}

{{/* [spam] controller_url: the controller the relay teaches, when anything is taught (spam
filtering and learning on, the relay running, a controller); empty otherwise, which also
keeps the mailbox service from queueing learning tasks nobody would process. */}}
{{- define "tern.rspamdControllerUrl" -}}
{{- $s := .Values.spam }}
{{- if and $s.enabled $s.learn .Values.relay.enabled }}
{{- if $s.rspamd.deploy }}
{{- printf "http://%s:%s" (include "tern.rspamdName" .) (include "tern.rspamdControllerPort" .) }}
{{- else }}
{{- $s.rspamd.controllerUrl }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret whose controller password Tern sends ([spam] password_file), when it sends
one: only with a controller to teach. */}}
{{- define "tern.rspamdPasswordSecret" -}}
{{- if include "tern.rspamdControllerUrl" . }}{{ include "tern.rspamdSecretName" . }}{{ end }}
{{- end }}

{{- define "tern.rspamdDir" -}}/etc/tern/rspamd{{- end }}

{{/* The volumeMount and volume of the controller password file, for the one pod that reads
it: the relay (the learner). The SMTP front-end and the mailbox service share the config file
that names [spam] password_file but never open it, so they do not mount it. */}}
{{- define "tern.rspamdPasswordMount" -}}
- name: rspamd-password
  mountPath: {{ include "tern.rspamdDir" . }}
  readOnly: true
{{- end }}

{{- define "tern.rspamdPasswordVolume" -}}
- name: rspamd-password
  secret:
    secretName: {{ include "tern.rspamdPasswordSecret" . }}
    defaultMode: 0440
    items:
      - {key: {{ .Values.spam.rspamd.controllerPasswordKey }}, path: password}
{{- end }}

{{/* The port of an http(s) URL: the one it names, else 80 or 443. */}}
{{- define "tern.urlPort" -}}
{{- $u := urlParse . }}
{{- if regexMatch ":[0-9]+$" $u.host }}{{ regexFind "[0-9]+$" $u.host }}
{{- else if eq $u.scheme "https" }}443
{{- else }}80
{{- end }}
{{- end }}

{{/* The files of the chart's rspamd's local.d, as a YAML map (name: content), the values'
localConfig on top. Passwords come from rspamd's command line (--var, from the Secret). */}}
{{- define "tern.rspamdLocalConfig" -}}
{{- $r := .Values.spam.rspamd }}
{{- $files := dict }}
{{- $_ := set $files "redis.conf" (printf "# Every module that keeps state (Bayes statistics, greylisting, rate limits, history)\n# uses the chart's Redis.\nservers = %s;\npassword = \"$TERN_REDIS_PASSWORD\";\n" (printf "%s:%s" (include "tern.rspamdRedisName" .) (include "tern.rspamdRedisPort" .) | toJson)) }}
{{- $_ = set $files "classifier-bayes.conf" "# Bayes statistics in Redis, one set per user: the request's Deliver-To header (Tern\n# sends the recipient when a message has one local recipient, and the account when it\n# teaches), else its first recipient.\nbackend = \"redis\";\nper_user = true;\n" }}
{{- $_ = set $files "worker-controller.inc" "# The controller's password (it replaces the upstream default); the relay sends it to learn.\npassword = \"$TERN_CONTROLLER_PASSWORD\";\n" }}
{{- $_ = set $files "worker-normal.inc" (printf "count = %d;\n" (int $r.workers)) }}
{{- $_ = set $files "worker-proxy.inc" "# Tern asks the normal worker over HTTP: no milter proxy.\nenabled = false;\n" }}
{{- if $r.nameservers }}
{{- $_ = set $files "options.inc" (printf "dns {\n  nameserver = %s;\n}\n" (toJson $r.nameservers)) }}
{{- end }}
{{- range $name, $content := $r.localConfig }}
{{- $_ = set $files $name $content }}
{{- end }}
{{- toYaml $files }}
{{- end }}

{{/* The import Job (importJob.*, templates/import-job.yaml). Where its Secret is mounted (every
key a file) and where sourceVolume is. */}}
{{- define "tern.importSecretDir" -}}/etc/tern/import{{- end }}
{{- define "tern.importSourceDir" -}}/import{{- end }}

{{/* The import Job's spec. Its hash names the Job, so that an upgrade that changes it creates a
new Job (a Job's pod template is immutable). */}}
{{- define "tern.importJobSpec" -}}
{{- $v := .Values }}
{{- $c := $v.importJob }}
{{- $dir := include "tern.importSecretDir" . -}}
backoffLimit: {{ int $c.backoffLimit }}
{{- if not (kindIs "invalid" $c.ttlSecondsAfterFinished) }}
ttlSecondsAfterFinished: {{ int $c.ttlSecondsAfterFinished }}
{{- end }}
template:
  metadata:
    labels:
      {{- include "tern.labels" (dict "root" . "component" "import") | nindent 6 }}
      {{- with $v.podLabels }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with (merge (deepCopy $c.podAnnotations) $v.podAnnotations) }}
    annotations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  spec:
    serviceAccountName: {{ include "tern.serviceAccountName" . }}
    automountServiceAccountToken: false
    enableServiceLinks: false
    # A failed run leaves its pod (and its log) and the Job starts another, which continues.
    restartPolicy: Never
    {{- include "tern.podScheduling" (dict "root" . "c" $c "component" "import" "replicas" 1) | trim | nindent 4 }}
    containers:
      - name: import
        image: {{ include "tern.image" . }}
        imagePullPolicy: {{ $v.image.pullPolicy }}
        command: [tern]
        args:
          - admin
          - import
          {{- if $c.csvKey }}
          - --csv
          - {{ printf "%s/%s" $dir $c.csvKey | quote }}
          - --parallel
          - {{ int $c.parallel | quote }}
          {{- else }}
          - {{ $c.address | quote }}
          - {{ $c.source | quote }}
          {{- if regexMatch "^imaps?://" $c.source }}
          - --password-file
          - {{ printf "%s/%s" $dir $c.passwordKey | quote }}
          {{- end }}
          {{- end }}
          {{- with $c.user }}
          - --user
          - {{ . | quote }}
          {{- end }}
          - --connections
          - {{ int $c.connections | quote }}
          {{- if $c.ignoreQuota }}
          - --ignore-quota
          {{- end }}
          {{- if $c.dryRun }}
          - --dry-run
          {{- end }}
          {{- range $c.extraArgs }}
          - {{ . | quote }}
          {{- end }}
        env:
          - name: RUST_LOG
            value: {{ $v.logLevel | quote }}
          # The mailbox's headless Service, as every other part reaches it.
          - name: TERN_SERVER
            value: {{ include "tern.mailboxUrl" . | quote }}
          # The Admin API's token: the Job looks the mailboxes up over the Admin API.
          - name: TERN_ADMIN_TOKEN
            valueFrom:
              secretKeyRef:
                name: {{ include "tern.adminSecretName" . }}
                key: token
          {{- if $v.tls.internal.enabled }}
          {{- $tls := include "tern.internalTlsDir" . }}
          # Internal mutual TLS: the mailbox's CA and the client certificate it requires.
          - name: TERN_INTERNAL_CA
            value: {{ printf "%s/ca.crt" $tls | quote }}
          - name: TERN_INTERNAL_CERT
            value: {{ printf "%s/tls.crt" $tls | quote }}
          - name: TERN_INTERNAL_KEY
            value: {{ printf "%s/tls.key" $tls | quote }}
          {{- end }}
          {{- with $v.extraEnv }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
          {{- with $c.extraEnv }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        resources:
          {{- toYaml $c.resources | nindent 10 }}
        securityContext:
          {{- toYaml $v.securityContext | nindent 10 }}
        volumeMounts:
          - name: tmp
            mountPath: /tmp
          {{- if $c.existingSecret }}
          - name: import-credentials
            mountPath: {{ $dir }}
            readOnly: true
          {{- end }}
          {{- if $c.sourceVolume }}
          - name: import-source
            mountPath: {{ include "tern.importSourceDir" . }}
            readOnly: true
          {{- end }}
          {{- if $v.tls.internal.enabled }}
          {{- include "tern.internalTlsMount" . | nindent 10 }}
          {{- end }}
    volumes:
      - name: tmp
        emptyDir:
          sizeLimit: 16Mi
      {{- if $c.existingSecret }}
      # Without items: every key is a file, so that the CSV's file: passwords may name any.
      - name: import-credentials
        secret:
          secretName: {{ $c.existingSecret }}
          defaultMode: 0440
      {{- end }}
      {{- if $c.sourceVolume }}
      - name: import-source
        persistentVolumeClaim:
          claimName: {{ $c.sourceVolume }}
          readOnly: true
      {{- end }}
      {{- if $v.tls.internal.enabled }}
      {{- include "tern.internalTlsVolume" . | nindent 6 }}
      {{- end }}
{{- end }}

{{/* The import Job's name: <fullname>-import-<8 hex digits of its spec's hash>, at most 62
characters (its pods' job-name label takes at most 63). */}}
{{- define "tern.importJobName" -}}
{{- printf "%s-import-%s" (include "tern.fullname" . | trunc 46 | trimSuffix "-") (include "tern.importJobSpec" . | sha256sum | trunc 8) }}
{{- end }}
