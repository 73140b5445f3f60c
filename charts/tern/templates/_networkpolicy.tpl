{{/* Pieces of the NetworkPolicies. */}}
{{- define "tern.np.dns" -}}
- ports:
    {{- range .Values.networkPolicy.dnsPorts }}
    - protocol: UDP
      port: {{ . }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}
{{- define "tern.np.metrics" -}}
- ports:
    - protocol: TCP
      port: {{ .Values.containerPorts.http }}
  {{- with .Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- define "tern.np.toMailbox" -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "tern.selectorLabels" (dict "root" . "component" "mailbox") | nindent 10 }}
  ports:
    - protocol: TCP
      port: {{ .Values.containerPorts.grpc }}
{{- end }}
{{/* Egress to rspamd: the chart's rspamd pods on port, or an external rspamd's URL's port
anywhere: (dict "root" $ "url" "http://..." "port" "11333"). */}}
{{- define "tern.np.toRspamd" -}}
{{- if include "tern.rspamdDeployed" .root }}
- to:
    - podSelector:
        matchLabels:
          {{- include "tern.selectorLabels" (dict "root" .root "component" "rspamd") | nindent 10 }}
  ports:
    - protocol: TCP
      port: {{ .port }}
{{- else }}
- ports:
    - protocol: TCP
      port: {{ include "tern.urlPort" .url }}
{{- end }}
{{- end }}
